/* ghl's per-location window, alone: statuses and other bulk calls leave
 * rate_reserve percent of each window to conversation messages, so that a
 * backlog of statuses never starves a reply. The API base is a loopback
 * port that is bound and not listening: every call that the window lets
 * through is refused at once (and counts in the window, as a call that
 * left); a call the window holds back is marked throttled, and not sent.
 * The shared window (several instances on PostgreSQL) is the owner's
 * callback: here one that keeps a log as the database function does. */
#include "ghl.h"
#include "log.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static int
fixed_token(void *ctx, const char *location_id, const char *stale, char **token_r)
{
	(void)ctx;
	(void)location_id;
	(void)stale;
	*token_r = strdup("tok");
	return GHL_TOKEN_FIXED;
}

/* A port nothing answers on: bound, never listening (connect: refused). */
static int
refusing_port(int *fd_r)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	*fd_r = socket(AF_INET, SOCK_STREAM, 0);
	if (*fd_r < 0 || bind(*fd_r, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(*fd_r, (struct sockaddr *)&a, &len) != 0)
		return -1;
	return ntohs(a.sin_port);
}

static struct ghl *
client(int port, long limit, long reserve)
{
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	struct ghl_params p = { .api_base = base, .timeout = 5, .rate_limit = limit, .rate_window = 60,
		.rate_reserve = reserve };
	struct ghl *g = ghl_new(&p);
	ghl_set_token_source(g, fixed_token, NULL);
	return g;
}

/* 1 = held back by the window, 0 = it left (and was refused), -1 other;
 * clears r */
static int
held(struct ghl_result *r)
{
	int h = r->throttled ? (r->retry_after_ms > 0 ? 1 : -1) : (r->status == 0 ? 0 : -1);
	ghl_result_clear(r);
	return h;
}

static int
status_call(struct ghl *g, const char *loc)
{
	struct ghl_result r;
	ghl_update_status(g, loc, "m1", "delivered", NULL, NULL, NULL, &r);
	return held(&r);
}

static int
message_call(struct ghl *g, const char *loc)
{
	struct ghl_result r;
	char *id = NULL;
	ghl_contact_search(g, loc, "bob@example.test", NULL, &id, &r);
	free(id);
	return held(&r);
}

/* Own window: 10 a window, 20 % kept for messages. */
static void
test_own_window(int port)
{
	struct ghl *g = client(port, 10, 20);
	int i;

	for (i = 0; i < 8; i++)
		CHECK_IDX(status_call(g, "L1") == 0, i);
	CHECK(status_call(g, "L1") == 1);          /* the 9th status waits: 2 kept */
	CHECK(message_call(g, "L1") == 0);          /* a reply's calls still go */
	CHECK(message_call(g, "L1") == 0);
	CHECK(message_call(g, "L1") == 1);          /* the window itself is full */
	CHECK(status_call(g, "L1") == 1);
	CHECK(status_call(g, "L2") == 0);           /* another location's window */
	ghl_free(g);

	/* 0: one window for all */
	g = client(port, 10, 0);
	for (i = 0; i < 10; i++)
		CHECK_IDX(status_call(g, "L1") == 0, i);
	CHECK(status_call(g, "L1") == 1);
	CHECK(message_call(g, "L1") == 1);
	ghl_free(g);

	/* messages alone may fill the whole window, statuses then wait too */
	g = client(port, 10, 20);
	for (i = 0; i < 10; i++)
		CHECK_IDX(message_call(g, "L1") == 0, i);
	CHECK(message_call(g, "L1") == 1);
	CHECK(status_call(g, "L1") == 1);
	ghl_free(g);
}

/* A shared window as mb_rate_lease keeps it: a count against the limit
 * each ask names. */
struct shared {
	long used, asks, last_limit;
};

static int64_t
shared_take(void *ctx, const char *location_id, long limit, int64_t window_ms, int64_t lease_ms, long want,
    long *granted_r)
{
	struct shared *s = ctx;
	(void)location_id;
	(void)window_ms;
	(void)lease_ms;
	(void)want;
	s->asks++;
	s->last_limit = limit;
	*granted_r = 0;
	if (s->used >= limit)
		return 5000;
	s->used++;
	*granted_r = 1;
	return 0;
}

static void
test_shared_window(int port)
{
	struct shared s = { 0, 0, 0 };
	struct ghl *g = client(port, 10, 20);
	long asks;
	int i;

	ghl_set_shared_limiter(g, shared_take, &s);
	for (i = 0; i < 8; i++)
		CHECK_IDX(status_call(g, "L1") == 0, i);
	CHECK(s.last_limit == 8);                   /* a status asks for the window less the reserve */
	CHECK(status_call(g, "L1") == 1);
	asks = s.asks;
	CHECK(status_call(g, "L1") == 1);           /* full for statuses: no round trip each */
	CHECK(s.asks == asks);
	CHECK(message_call(g, "L1") == 0);          /* but a message still asks, and goes */
	CHECK(s.last_limit == 10);
	CHECK(message_call(g, "L1") == 0);
	CHECK(message_call(g, "L1") == 1);          /* full for all */
	asks = s.asks;
	CHECK(message_call(g, "L1") == 1);
	CHECK(status_call(g, "L1") == 1);
	CHECK(s.asks == asks);
	ghl_free(g);
}

int
main(void)
{
	int fd, port = refusing_port(&fd);

	log_set_level(LOG_LVL_ERROR);   /* the refusals would warn */
	CHECK(port > 0);
	if (port > 0) {
		test_own_window(port);
		test_shared_window(port);
	}
	close(fd);
	return test_done("test_ghl");
}
