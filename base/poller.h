/* poller: worker threads that take due work from somewhere (the store)
 * and sleep until the next item is due or someone wakes them.
 *
 * As Redis's ae.c timers do, each step says when it wants to run again:
 * step(ctx, slot) does at most one unit of work and returns the delay in
 * ms before the next step (<= 0: at once). The wait is cut short by
 * poller_wake and poller_stop, and is never longer than max_wait_ms, so
 * work that was added without a wake is still found. A wake that comes
 * while a step runs is not lost: the thread steps again at once.
 *
 * slot is the thread's own pointer (starts NULL; an SMTP connection kept
 * between jobs, for instance); fini(ctx, slot) is called with it when the
 * thread ends. */
#ifndef MB_POLLER_H
#define MB_POLLER_H

#include <stdint.h>

typedef int64_t (*poller_step_fn)(void *ctx, void **slot);
typedef void (*poller_fini_fn)(void *ctx, void *slot);

struct poller_params {
	const char *name;          /* for the log: "outbound", "report", ... */
	int threads;
	int64_t max_wait_ms;
	int nice;                  /* added to each thread's nice value (Linux: per thread); 0 none */
	poller_step_fn step;
	poller_fini_fn fini;       /* may be NULL */
	void *ctx;
};

struct poller;

/* NULL when no thread could start (logged). */
struct poller *poller_start(const struct poller_params *p);
void poller_wake(struct poller *p);             /* NULL: nothing */
/* Asks every thread to stop after its current step, joins them and frees
 * p. NULL: nothing. */
void poller_stop(struct poller *p);

/* The delay to hand back when idle: until next_due (ms since the epoch,
 * < 0 none known), at most cap. */
int64_t poller_until(int64_t next_due, int64_t cap);

#endif
