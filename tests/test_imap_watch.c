/* imap_watch: the reactor and its workers hand each mailbox back and forth
 * under one lock. Many mailboxes whose server refuses every connection
 * (each step is short and fails), poked without pause from another
 * thread, as mailboxes_balance pokes on every lease it takes or hands
 * over: no mailbox is ever stepped by two workers at once, and none is
 * lost (every one answers a last poke). Before the fix a worker set its
 * mailbox's state before handing it back: a poke or the timer scan in
 * that gap queued it a second time while the worker still held it, the
 * work and return lists crossed, and the watcher wedged (every run of
 * this test, before the fix). */
#include "imap_watch.h"
#include "log.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N_BOXES 48
#define POKE_MS 3000

static struct imap_mailbox boxes[N_BOXES];
static char ids[N_BOXES][8];
static atomic_int in_step[N_BOXES];
static atomic_long steps[N_BOXES];
static atomic_int overlaps;
static atomic_bool poking;
static struct imap_watch *watch;

static int
box_index(const char *id)
{
	return atoi(id + 1);
}

/* A step starts here (the watcher asks first) ... */
static const char *
sink_paused(void *ctx, const char *id)
{
	int i = box_index(id);
	(void)ctx;
	if (atomic_exchange(&in_step[i], 1))
		atomic_fetch_add(&overlaps, 1);
	atomic_fetch_add(&steps[i], 1);
	return NULL;
}

/* ... and a failed one ends here ("backing off"). A short sleep widens
 * the gap in which the old code was exposed. */
static void
sink_status(void *ctx, const char *id, const char *state, const char *detail)
{
	(void)ctx;
	(void)detail;
	if (strcmp(state, "backing off") == 0) {
		atomic_store(&in_step[box_index(id)], 0);
		usleep(50);
	}
}

static enum imap_delivery
sink_deliver(void *ctx, const char *id, const char *raw, size_t len)
{
	(void)ctx, (void)id, (void)raw, (void)len;
	return IMAP_DELIVERED;
}

static int
sink_mark_get(void *ctx, const char *id, struct imap_mark *m)
{
	(void)ctx, (void)id, (void)m;
	return 0;
}

static int
sink_mark_put(void *ctx, const char *id, const struct imap_mark *m)
{
	(void)ctx, (void)id, (void)m;
	return 0;
}

static void *
poker(void *arg)
{
	(void)arg;
	while (atomic_load(&poking))
		for (int i = 0; i < N_BOXES; i++)
			imap_watch_poke(watch, ids[i]);
	return NULL;
}

/* A loopback port nothing listens on: every connection is refused at once. */
static int
closed_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -1;
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* the old fault wedged the watcher: a cycle in a list, walked under the
 * lock, and the next poke waits for ever */
static void
on_alarm(int sig)
{
	static const char msg[] = "test_imap_watch: the watcher is wedged (a poke waited 20 s)\n";
	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, ms % 1000 * 1000000 };
	nanosleep(&ts, NULL);
}

int
main(void)
{
	static const struct imap_sink sink = { NULL, sink_deliver, sink_mark_get, sink_mark_put, sink_status,
		sink_paused };
	long before[N_BOXES], total = 0;
	int port = closed_port(), silent = 0;
	pthread_t t;

	log_set_level(LOG_LVL_ERROR);
	signal(SIGALRM, on_alarm);
	alarm(20);
	CHECK(port > 0);
	for (int i = 0; i < N_BOXES; i++) {
		snprintf(ids[i], sizeof(ids[i]), "L%d", i);
		boxes[i] = (struct imap_mailbox){ .id = ids[i], .host = "127.0.0.1", .port = port, .tls = TLS_MODE_NONE,
			.user = "u", .password = "p", .folder = "INBOX", .after = "seen", .idle = true,
			.idle_interval = 600, .poll_interval = 600 };
	}
	watch = imap_watch_start(boxes, N_BOXES, &sink, 4, 100000);
	atomic_store(&poking, true);
	pthread_create(&t, NULL, poker, NULL);
	sleep_ms(POKE_MS);
	atomic_store(&poking, false);
	pthread_join(t, NULL);
	/* settle, then one last poke each: every mailbox answers it */
	sleep_ms(300);
	for (int i = 0; i < N_BOXES; i++) {
		before[i] = atomic_load(&steps[i]);
		total += before[i];
		imap_watch_poke(watch, ids[i]);
	}
	sleep_ms(1000);
	for (int i = 0; i < N_BOXES; i++)
		if (atomic_load(&steps[i]) == before[i])
			silent++;
	printf("imap_watch: %ld steps while poked, %d overlapping, %d mailbox(es) lost\n", total,
	    atomic_load(&overlaps), silent);
	CHECK(total > N_BOXES * 10);       /* the pokes did drive the workers */
	CHECK(atomic_load(&overlaps) == 0);
	CHECK(silent == 0);
	CHECK(imap_watch_connected(watch) == 0);
	imap_watch_stop(watch);
	return test_done("test_imap_watch");
}
