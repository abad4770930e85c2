/* util: small helpers shared by every module (allocation that aborts on
 * OOM, time, file reading, header-safety checks). */
#ifndef MB_UTIL_H
#define MB_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);          /* NULL stays NULL */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int64_t now_ms(void);                  /* CLOCK_REALTIME in milliseconds */
int64_t mono_ms(void);                 /* CLOCK_MONOTONIC in milliseconds */
int64_t mono_us(void);                 /* CLOCK_MONOTONIC in microseconds (latencies) */
/* n bytes as 2n lower-case hex digits and a NUL into out (2n + 1 bytes). */
void hex_encode(const void *in, size_t n, char *out);
/* ms since the epoch as ISO 8601 UTC, "2026-11-30T03:25:21Z" (len >= 21). */
void iso_time(int64_t ms, char *buf, size_t len);
void sleep_ms(int64_t ms);             /* the whole of it, across signals */
/* pthread_cond_timedwait for at most ms from now (the caller holds m). */
int cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms);
/* Names the calling thread "mb-<role>" (cut to Linux's 15 characters),
 * as top -H, ps -L and perf show it. */
void thread_name(const char *role);

/* Reads a whole file (NUL-terminated, *len_r without the NUL); NULL + errno
 * on failure or when larger than max. Caller frees. */
char *read_file(const char *path, size_t max, size_t *len_r);

/* True when s contains a byte that must never reach a mail header:
 * CR, LF or NUL (within len). */
bool has_header_break(const char *s, size_t len);

/* Compares two secrets in time that depends only on their lengths, not
 * on where they differ (NULL never matches). */
bool secret_equal(const char *given, const char *expected);

/* Random 64 bits from the OS (getrandom); never fails after start-up. */
uint64_t random_u64(void);

/* Jittered exponential backoff: base * 2^attempt capped at max, then a
 * random factor in [0.5, 1.0]. Milliseconds. */
int64_t backoff_ms(int attempt, int64_t base_ms, int64_t max_ms);

#endif
