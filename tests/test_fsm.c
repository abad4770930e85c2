/* fsm: the job and inbound state machines, over every state and event.
 * Pure: no store. Rows are (from, event) -> (to, effects), or -1 where
 * the event does not apply. */
#include "engage.h"
#include "inbound_fsm.h"
#include "job.h"
#include "test.h"

#include <string.h>

#define J(j, r, s) { JOB_##j, REPORT_##r, STATUS_##s }
#define NO { -1, -1, -1 }   /* the event does not apply */

static bool
same(const struct job_fsm *a, const struct job_fsm *b)
{
	return a->job == b->job && a->report == b->report && a->status == b->status;
}

static void
test_names(void)
{
	for (int i = 0; i < JOB_STATE_N; i++)
		CHECK_IDX(job_state_parse(job_state_name((enum job_state)i)) == i, i);
	for (int i = 0; i < REPORT_STATE_N; i++)
		CHECK_IDX(job_report_state_parse(job_report_state_name((enum report_state)i)) == i, i);
	for (int i = 0; i < STATUS_N; i++)
		CHECK_IDX(job_report_status_parse(job_report_status_name((enum report_status)i)) == i, i);
	for (int i = 0; i < IN_STATE_N; i++)
		CHECK_IDX(inbound_state_parse(inbound_state_name((enum inbound_state)i)) == i, i);
	CHECK(job_state_parse("bogus") == -1 && job_report_state_parse(NULL) == -1 && job_report_status_parse("x") == -1);
	CHECK(inbound_state_parse("bogus") == -1);
	/* the names the store's SQL selects by are the table's */
	CHECK(!strcmp(job_state_name(JOB_SENT), JOB_NAME_SENT) && !strcmp(job_report_state_name(REPORT_PENDING),
	    REPORT_NAME_PENDING));
}

/* The one-event moves, from every send state. */
static void
test_simple_moves(void)
{
	static const struct {
		enum job_state from;
		int claim, sending, recover, retry, release;   /* the state reached, or -1 */
		bool uncertain, droppable, open;
	} rows[] = {
		{ JOB_QUEUED, JOB_CLAIMED, -1, -1, JOB_QUEUED, -1, false, true, true },
		{ JOB_CLAIMED, -1, JOB_SENDING, JOB_QUEUED, -1, JOB_QUEUED, false, false, true },
		{ JOB_SENDING, -1, JOB_SENDING, JOB_QUEUED, -1, -1, true, false, true },
		{ JOB_SENT, -1, -1, -1, -1, -1, false, true, false },
		{ JOB_FAILED, -1, -1, -1, JOB_QUEUED, -1, false, true, false },
	};
	CHECK(sizeof(rows) / sizeof(rows[0]) == JOB_STATE_N);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_fsm cur = { rows[i].from, REPORT_GAVE_UP, STATUS_FAILED }, next;
		bool unsure = !rows[i].uncertain;
		int r;
		r = job_on_claim(&cur, &next);
		CHECK_IDX(rows[i].claim < 0 ? r == -1 : r == 0 && (int)next.job == rows[i].claim, i);
		r = job_on_sending(&cur, &next);
		CHECK_IDX(rows[i].sending < 0 ? r == -1 : r == 0 && (int)next.job == rows[i].sending &&
		    next.report == cur.report && next.status == cur.status, i);
		r = job_on_recover(&cur, &next, &unsure);
		CHECK_IDX(rows[i].recover < 0 ? r == -1 : r == 0 && (int)next.job == rows[i].recover, i);
		CHECK_IDX(unsure == rows[i].uncertain, i);
		r = job_on_retry(&cur, &next);
		/* a retried job has nothing to report yet */
		CHECK_IDX(rows[i].retry < 0 ? r == -1 : r == 0 && (int)next.job == rows[i].retry &&
		    next.report == REPORT_NONE, i);
		/* a release leaves the report as it was */
		r = job_on_release(&cur, &next);
		CHECK_IDX(rows[i].release < 0 ? r == -1 : r == 0 && (int)next.job == rows[i].release &&
		    next.report == cur.report && next.status == cur.status, i);
		CHECK_IDX(job_can_drop(&cur) == rows[i].droppable, i);
		CHECK_IDX(job_is_open(cur.job) == rows[i].open, i);
	}
}

/* An attempt's end, including the early report it releases. */
static void
test_attempt(void)
{
	static const struct {
		struct job_fsm cur;
		enum job_outcome outcome;
		enum report_status status;
		struct job_fsm want;
		bool keep_error, due;
	} rows[] = {
		/* 0: plain outcomes */
		{ J(SENDING, NONE, NONE), ATTEMPT_SENT, STATUS_DELIVERED, J(SENT, PENDING, DELIVERED), false, true },
		{ J(SENDING, NONE, NONE), ATTEMPT_SENT, STATUS_NONE, J(SENT, NONE, NONE), false, false },
		{ J(SENDING, NONE, NONE), ATTEMPT_RETRY, STATUS_NONE, J(QUEUED, NONE, NONE), false, false },
		{ J(CLAIMED, NONE, NONE), ATTEMPT_FAILED, STATUS_FAILED, J(FAILED, PENDING, FAILED), false, true },
		{ J(CLAIMED, NONE, NONE), ATTEMPT_SENT, STATUS_DELIVERED, J(SENT, PENDING, DELIVERED), false, true },
		/* 5: an early report is released by the send, and wins over it */
		{ J(SENDING, EARLY, DELIVERED), ATTEMPT_SENT, STATUS_NONE, J(SENT, PENDING, DELIVERED), false, true },
		{ J(SENDING, EARLY, FAILED), ATTEMPT_SENT, STATUS_NONE, J(FAILED, PENDING, FAILED), true, true },
		{ J(CLAIMED, EARLY, FAILED), ATTEMPT_SENT, STATUS_DELIVERED, J(FAILED, PENDING, FAILED), true, true },
		{ J(CLAIMED, EARLY, READ), ATTEMPT_SENT, STATUS_DELIVERED, J(SENT, PENDING, READ), false, true },
		/* 9: a retry keeps it early; a failure overrides it */
		{ J(SENDING, EARLY, DELIVERED), ATTEMPT_RETRY, STATUS_NONE, J(QUEUED, EARLY, DELIVERED), false, false },
		{ J(SENDING, EARLY, DELIVERED), ATTEMPT_FAILED, STATUS_FAILED, J(FAILED, PENDING, FAILED), false, true },
		/* 11: not being sent: nothing to end */
		{ J(QUEUED, NONE, NONE), ATTEMPT_SENT, STATUS_DELIVERED, NO, false, false },
		{ J(SENT, PENDING, DELIVERED), ATTEMPT_SENT, STATUS_DELIVERED, NO, false, false },
		{ J(FAILED, DONE, FAILED), ATTEMPT_FAILED, STATUS_FAILED, NO, false, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_fsm next;
		struct job_effect fx = { true, true };
		int r = job_on_attempt(&rows[i].cur, rows[i].outcome, rows[i].status, &next, &fx);
		if ((int)rows[i].want.job < 0) {
			CHECK_IDX(r == -1, i);
			continue;
		}
		CHECK_IDX(r == 0 && same(&next, &rows[i].want), i);
		CHECK_IDX(fx.keep_error == rows[i].keep_error && fx.report_due == rows[i].due, i);
	}
}

static void
test_report(void)
{
	static const struct {
		struct job_fsm cur;
		enum report_outcome o;
		struct job_fsm want;
	} rows[] = {
		{ J(SENT, PENDING, DELIVERED), REPORT_POSTED, J(SENT, DONE, DELIVERED) },
		{ J(SENT, PENDING, DELIVERED), REPORT_LATER, J(SENT, PENDING, DELIVERED) },
		{ J(FAILED, PENDING, FAILED), REPORT_STOP, J(FAILED, GAVE_UP, FAILED) },
		/* nothing pending: nothing to end */
		{ J(SENT, DONE, DELIVERED), REPORT_POSTED, NO },
		{ J(SENDING, EARLY, FAILED), REPORT_POSTED, NO },
		{ J(QUEUED, NONE, NONE), REPORT_LATER, NO },
		{ J(FAILED, GAVE_UP, FAILED), REPORT_STOP, NO },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_fsm next;
		int r = job_on_report(&rows[i].cur, rows[i].o, &next);
		CHECK_IDX((int)rows[i].want.job < 0 ? r == -1 : r == 0 && same(&next, &rows[i].want), i);
	}
}

static void
test_dsn(void)
{
	static const struct {
		struct job_fsm cur;
		enum report_status status;
		struct job_fsm want;
		bool due;
	} rows[] = {
		/* being sent: held until the send is recorded */
		{ J(CLAIMED, NONE, NONE), STATUS_FAILED, J(CLAIMED, EARLY, FAILED), false },
		{ J(SENDING, NONE, NONE), STATUS_DELIVERED, J(SENDING, EARLY, DELIVERED), false },
		{ J(SENDING, EARLY, DELIVERED), STATUS_FAILED, J(SENDING, EARLY, FAILED), false },
		/* 3: finished: due now; a failure fails the job */
		{ J(SENT, NONE, NONE), STATUS_DELIVERED, J(SENT, PENDING, DELIVERED), true },
		{ J(SENT, DONE, DELIVERED), STATUS_FAILED, J(FAILED, PENDING, FAILED), true },
		{ J(SENT, PENDING, DELIVERED), STATUS_READ, J(SENT, PENDING, READ), true },
		{ J(FAILED, GAVE_UP, FAILED), STATUS_DELIVERED, J(FAILED, PENDING, DELIVERED), true },
		/* 7: a queued job sent nothing; no status is no report */
		{ J(QUEUED, NONE, NONE), STATUS_FAILED, NO, false },
		{ J(QUEUED, EARLY, FAILED), STATUS_DELIVERED, NO, false },
		{ J(SENT, NONE, NONE), STATUS_NONE, NO, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_fsm next;
		struct job_effect fx = { true, true };
		int r = job_on_dsn(&rows[i].cur, rows[i].status, &next, &fx);
		if ((int)rows[i].want.job < 0) {
			CHECK_IDX(r == -1, i);
			continue;
		}
		CHECK_IDX(r == 0 && same(&next, &rows[i].want) && fx.report_due == rows[i].due && !fx.keep_error, i);
	}
}

static void
test_inbound(void)
{
	static const struct {
		enum inbound_state s;
		enum inbound_action read, retry;   /* a re-read; an operator's retry */
		bool final;
	} rows[] = {
		{ IN_NEW, IN_ACT_HANDLE, IN_ACT_HANDLE, false },
		{ IN_POSTING, IN_ACT_HANDLE_AGAIN, IN_ACT_HANDLE_AGAIN, false },
		{ IN_POSTED, IN_ACT_NONE, IN_ACT_NONE, true },
		{ IN_SKIPPED, IN_ACT_NONE, IN_ACT_NONE, true },
		{ IN_DSN, IN_ACT_NONE, IN_ACT_NONE, true },
		{ IN_FAILED, IN_ACT_NONE, IN_ACT_HANDLE, true },
		{ IN_RETRY, IN_ACT_HANDLE, IN_ACT_HANDLE, false },
	};
	CHECK(sizeof(rows) / sizeof(rows[0]) == IN_STATE_N);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		CHECK_IDX(inbound_on_read(rows[i].s, false) == rows[i].read, i);
		CHECK_IDX(inbound_on_read(rows[i].s, true) == rows[i].retry, i);
		CHECK_IDX(inbound_is_final(rows[i].s) == rows[i].final, i);
	}
}

static void
test_engage(void)
{
	static const struct {
		int code;
		const char *dsn;
		bool await;
		size_t n;
		enum engage_kind a, b;
	} rows[] = {
		{ 250, NULL, false, 2, ENG_ACCEPTED, ENG_DELIVERED },
		{ 250, NULL, true, 1, ENG_ACCEPTED, 0 },
		{ 550, NULL, false, 1, ENG_REJECTED, 0 },
		{ 451, NULL, false, 1, ENG_TEMPORARY_FAIL, 0 },
		{ 0, NULL, false, 0, 0, 0 },
		{ 250, "failed", false, 1, ENG_PERMANENT_FAIL, 0 },
		{ 0, "delayed", true, 1, ENG_TEMPORARY_FAIL, 0 },
		{ 0, "delivered", true, 1, ENG_DELIVERED, 0 },
		{ 0, "relayed", true, 1, ENG_DELIVERED, 0 },
		{ 0, "expanded", true, 1, ENG_DELIVERED, 0 },
		{ 0, "bogus", true, 0, 0, 0 },
	};
	bool has[ENG_KIND_N] = { false };

	for (int k = 0; k < ENG_KIND_N; k++)
		CHECK_IDX(engage_name((enum engage_kind)k) && engage_parse(engage_name((enum engage_kind)k)) == k, k);
	CHECK(engage_parse("nope") == -1 && engage_parse(NULL) == -1 && engage_name(ENG_KIND_N) == NULL);
	CHECK(!strcmp(engage_name(ENG_PERMANENT_FAIL), "permanent_fail"));
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		enum engage_kind out[2];
		size_t n = engage_on_rcpt(rows[i].code, rows[i].dsn, rows[i].await, out);
		CHECK_IDX(n == rows[i].n, i);
		CHECK_IDX(n < 1 || out[0] == rows[i].a, i);
		CHECK_IDX(n < 2 || out[1] == rows[i].b, i);
	}
	CHECK(!strcmp(engage_status(NULL, has), "sent"));
	CHECK(!strcmp(engage_status("delivered", has), "delivered"));
	has[ENG_REPLIED] = true;
	CHECK(!strcmp(engage_status(NULL, has), "delivered"));
	CHECK(!strcmp(engage_status("sent", has), "delivered"));
	CHECK(!strcmp(engage_status("failed", has), "failed"));
	has[ENG_OPENED] = true;
	CHECK(!strcmp(engage_status("delivered", has), "opened"));
	has[ENG_CLICKED] = true;
	CHECK(!strcmp(engage_status("delivered", has), "clicked"));
	memset(has, 0, sizeof(has));
	has[ENG_PERMANENT_FAIL] = true;
	CHECK(!strcmp(engage_status(NULL, has), "failed"));
	CHECK(!strcmp(engage_status("sent", has), "sent"));
}

int
main(void)
{
	test_names();
	test_simple_moves();
	test_attempt();
	test_report();
	test_dsn();
	test_inbound();
	test_engage();
	return test_done("test_fsm");
}
