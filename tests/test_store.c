/* store: schema 5 moves payloads out of the jobs table, 6 adds the re-read
 * mark to IMAP checkpoints; an existing database must come through with
 * every job, its payload, its emailMessageId and every checkpoint, and
 * job_add must keep storing each webhook once; a job's state changes
 * commit together with their trace events and threading record.
 * Retention (store_prune) forgets exactly the finished work outside its
 * window, across more than one batch. */
#include "jobs.h"
#include "store.h"
#include "store_copy.h"
#include "store_events.h"
#include "store_inbound.h"
#include "store_engage.h"
#include "store_jobs.h"
#include "store_kv.h"
#include "store_threads.h"
#include "store_tokens.h"
#include "store_unsub.h"
#include "test.h"
#include "util.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char dir[] = "/tmp/mb-test-store-XXXXXX";

static sqlite3 *
open_raw(const char *d)
{
	char *path;
	sqlite3 *db;
	if (asprintf(&path, "%s/mailbridge.db", d) < 0 || sqlite3_open(path, &db) != SQLITE_OK)
		abort();
	free(path);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t
count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *q;
	int64_t n = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return n;
}

static void
exec_raw(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
		abort();
	}
}

/* Appends "kind " or "kind:detail " (webhook events without detail). */
static void
collect_kinds(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg)
{
	char *out = arg;
	size_t n = strlen(out);
	(void)at;
	(void)message_id;
	snprintf(out + n, 256 - n, "%s%s%s ", kind, strcmp(kind, "webhook") && detail ? ":" : "",
	    strcmp(kind, "webhook") && detail ? detail : "");
}

/* A journey on a fresh store: each state change commits with what goes
 * with it (threading record, trace event), or not at all. */
static void
count_engage(const char *event, const char *who, int64_t done_at, const char *error, void *arg)
{
	int *n = arg;
	(void)event;
	(void)who;
	(void)error;
	n[0]++;
	if (done_at)
		n[1]++;
}

/* The outbox of message id (its report pending, one permanent_fail from
 * the DSN): once per (event, who); the poster leaves a message whose
 * report is pending to the reporter; done rows never go again. */
static void
test_engagement(struct store *st, const char *id)
{
	struct engage_add more[] = { { "permanent_fail", "bob@x.test" }, { "replied", "" }, { "replied", NULL } };
	struct engage_batch *b = NULL;
	int n[2] = { 0, 0 };

	CHECK(store_engage_add(st, "loc", id, more, 3, 1) == 1);       /* only "replied" is new */
	CHECK(store_engage_claim(st, now_ms(), 60000, &b) == 0 && !b);  /* the report is pending */
	CHECK(store_engage_next_due(st) == -1);                          /* and not due for the poster */
	CHECK(store_engage_claim_message(st, id, now_ms(), 60000, &b) == 1 && b && b->n == 2 && b->attempts == 1);
	store_engage_batch_free(b);
	CHECK(store_engage_claim_message(st, id, now_ms(), 60000, &b) == 0 && !b);     /* leased */
	CHECK(store_engage_claim_message(st, id, now_ms() + 120000, 60000, &b) == 1 && b && b->attempts == 2);
	CHECK(b && store_engage_done(st, b, NULL) == 1);
	store_engage_batch_free(b);
	b = NULL;
	CHECK(store_engage_claim_message(st, id, now_ms() + 600000, 60000, &b) == 0 && !b);
	CHECK(store_engage_each(st, id, count_engage, n) == 2 && n[0] == 2 && n[1] == 2);
	CHECK(store_engage_add(st, "loc", id, more, 1, 0) == 0);
}

static void
test_journey(void)
{
	static char jdir[] = "/tmp/mb-test-journey-XXXXXX";
	static const char want[] = "webhook send:attempt 1: sent; 250 queued as ABC status:delivered ";
	struct store *st;
	struct job *j = NULL, *rj = NULL;
	struct msgmap mm = { .rfc_message_id = "r3@mail.test", .location_id = "L1",
		.ghl_message_id = "mj", .reply_token = "tok3" };
	struct msgmap *got = NULL;
	char *err = NULL, cmd[128], seen[256] = "";

	if (!mkdtemp(jdir) || !(st = store_open(jdir, &err))) {
		fprintf(stderr, "test_journey: %s\n", err ? err : "mkdtemp");
		abort();
	}
	CHECK(store_job_add(st, "mj", "L1", "Email", NULL, "{}") == 1);
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j);
	CHECK(j && jobs_sending(st, j, &mm) == 1 && j->fsm.job == JOB_SENDING);
	CHECK(store_msgmap_get(st, MSGMAP_BY_TOKEN, "L1", "tok3", &got) == 1 && got &&
	    strcmp(got->rfc_message_id, "r3@mail.test") == 0);
	store_msgmap_free(got);
	/* no thread without its job: a job that is not there (or no longer
	 * claimed) is not marked, and its threading record is not written */
	mm.rfc_message_id = "orphan@mail.test";
	mm.reply_token = "tok-orphan";
	got = NULL;
	CHECK(store_job_mark_sending(st, 999999, JOB_CLAIMED, JOB_SENDING, &mm) == 0);
	CHECK(store_job_mark_sending(st, j ? j->id : 0, JOB_CLAIMED, JOB_SENDING, &mm) == 0);   /* not claimed now */
	CHECK(store_msgmap_get(st, MSGMAP_BY_TOKEN, "L1", "tok-orphan", &got) == 0 && !got);
	/* but a thread that cannot be recorded (its reply token taken) does
	 * not keep the send from being marked */
	{
		struct job *k = NULL, *kk = NULL;
		struct msgmap clash = { .rfc_message_id = "clash@mail.test", .location_id = "L1", .reply_token = "tok3" };
		CHECK(store_job_add(st, "mk", "L1", "Email", NULL, "{}") == 1);
		CHECK(jobs_claim(st, now_ms() + 1000, &k) == 1 && k);
		CHECK(k && jobs_sending(st, k, &clash) == 1);
		CHECK(store_job_get(st, "mk", &kk) == 1 && kk && kk->fsm.job == JOB_SENDING);
		CHECK(store_msgmap_get(st, MSGMAP_BY_RFC, "L1", "clash@mail.test", &got) == 0 && !got);
		store_job_free(k);
		store_job_free(kk);
	}
	{
		struct job_attempt_rec rec = { .code = 250, .event = "attempt 1: sent; 250 queued as ABC" };
		CHECK(j && jobs_attempt(st, j, ATTEMPT_SENT, STATUS_DELIVERED, &rec) == 1 && rec.report_due &&
		    j->fsm.job == JOB_SENT && j->fsm.report == REPORT_PENDING && j->fsm.status == STATUS_DELIVERED);
	}
	CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj) == 1 && rj && j && rj->id == j->id);
	CHECK(rj && jobs_report(st, rj, REPORT_POSTED, 0, NULL) == 1 && rj->fsm.report == REPORT_DONE);
	store_job_free(rj);
	CHECK(store_events_each(st, "mj", collect_kinds, seen) >= 0);
	CHECK(strcmp(seen, want) == 0);
	if (strcmp(seen, want) != 0)
		fprintf(stderr, "events: %s\n", seen);
	/* another location's copy of our message (our mail in a mailbox it
	 * reads) does not rewrite our thread record */
	{
		struct msgmap other = { .rfc_message_id = "r3@mail.test", .location_id = "L2",
			.ghl_message_id = "in-other", .alt_id = "r3@mail.test" };
		CHECK(store_msgmap_put(st, &other) == 1);
		got = NULL;
		CHECK(store_msgmap_get(st, MSGMAP_BY_TOKEN, "L1", "tok3", &got) == 1 && got &&
		    !strcmp(got->ghl_message_id, "mj") && !got->alt_id);
		store_msgmap_free(got);
	}
	/* a reply posted: record, thread and both events together */
	{
		struct msgmap rm = { .rfc_message_id = "reply@x.test", .location_id = "L1",
			.ghl_message_id = "g-reply", .alt_id = "reply@x.test" };
		enum inbound_state state;
		int64_t v = -1;
		seen[0] = '\0';
		got = NULL;
		CHECK(store_inbound_posted(st, "L1", "reply@x.test", "g-reply", "from a", &rm, "mj", "posted", "a@x.test") == 1);
		CHECK(store_inbound_state(st, "L1", "reply@x.test", &state, &v) == 1 && state == IN_POSTED);
		CHECK(store_inbound_state(st, "L1", "never@x.test", &state, &v) == 0 && state == IN_NEW);
		{
			/* two readers of one message (a copy spooled twice): only
			 * the first takes the post; a crash's leftover is taken once */
			CHECK(store_inbound_state(st, "L1", "twice@x.test", &state, &v) == 0 && v == 0);
			CHECK(store_inbound_take(st, "L1", "twice@x.test", 0, "s") == 1);
			CHECK(store_inbound_take(st, "L1", "twice@x.test", 0, "s") == 0);
			CHECK(store_inbound_state(st, "L1", "twice@x.test", &state, &v) == 1 && state == IN_POSTING && v == 1);
			CHECK(store_inbound_take(st, "L1", "twice@x.test", 1, "s") == 1);
			CHECK(store_inbound_take(st, "L1", "twice@x.test", 1, "s") == 0);
		}
		CHECK(store_msgmap_get(st, MSGMAP_BY_ALT, "L1", "reply@x.test", &got) == 1 && got &&
		    !strcmp(got->ghl_message_id, "g-reply"));
		store_msgmap_free(got);
		CHECK(store_events_each(st, "mj", collect_kinds, seen) >= 0 && strstr(seen, "reply:posted "));
		seen[0] = '\0';
		CHECK(store_events_each(st, "g-reply", collect_kinds, seen) >= 0 && !strcmp(seen, "inbound:posted "));
	}
	store_job_free(j);
	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", jdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", jdir);
}

/* Jobs named by what they are: old (created 40 days ago) or new, their
 * state and report state; and 1200 old finished ones (> 2 batches). */
static void
test_prune(void)
{
	static char pdir[] = "/tmp/mb-test-prune-XXXXXX";
	struct store *st;
	char *err = NULL;
	const int64_t day = 86400000LL, now = now_ms(), old = now - 40 * day;
	static const char *const names[] = { "old_sent", "old_pending", "old_queued", "old_failed",
	    "new_sent", "new_failed" };
	struct store_pruned p;
	struct msgmap m = { 0 };
	sqlite3 *db;
	char sql[2048];

	if (!mkdtemp(pdir) || !(st = store_open(pdir, &err))) {
		fprintf(stderr, "test_prune: %s\n", err ? err : "mkdtemp");
		abort();
	}
	/* oldest first: rowids grow with time, as store_prune expects */
	for (int i = 0; i < 1200; i++) {
		snprintf(sql, sizeof(sql), "bulk%d", i);
		CHECK_IDX(store_job_add(st, sql, "LP", "Email", NULL, "{}") == 1, i);
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		CHECK_IDX(store_job_add(st, names[i], "LP", "Email", NULL, "{\"to\":\"x@y\"}") == 1, i);
	CHECK(store_webhook_seen(st, "wh_old", old) == 1 && store_webhook_seen(st, "wh_new", now) == 1);
	CHECK(store_inbound_record(st, "LP", "in_old", IN_POSTED, "g1", NULL, NULL, NULL, 0) == 1);
	CHECK(store_inbound_record(st, "LP", "in_new", IN_POSTED, "g2", NULL, NULL, NULL, 0) == 1);
	m.location_id = (char *)"LP";
	m.rfc_message_id = (char *)"thread_400d@x";
	CHECK(store_msgmap_put(st, &m) == 1);
	m.rfc_message_id = (char *)"thread_40d@x";
	CHECK(store_msgmap_put(st, &m) == 1);
	/* each job_add wrote the job's "webhook" event */

	db = open_raw(pdir);
	snprintf(sql, sizeof(sql),
	    "UPDATE jobs SET created_at=%lld, updated_at=%lld WHERE message_id LIKE 'old%%' OR message_id LIKE 'bulk%%';"
	    "UPDATE jobs SET state='sent', report_state='done' WHERE message_id IN ('old_sent','new_sent') "
	    "  OR message_id LIKE 'bulk%%';"
	    "UPDATE jobs SET state='sent', report_state='pending' WHERE message_id='old_pending';"
	    "UPDATE jobs SET state='failed', report_state='gave_up' WHERE message_id IN ('old_failed','new_failed');"
	    "UPDATE inbound_seen SET created_at=%lld WHERE dedupe_key='in_old';"
	    "UPDATE message_map SET created_at=%lld WHERE rfc_message_id='thread_400d@x';"
	    "UPDATE message_map SET created_at=%lld WHERE rfc_message_id='thread_40d@x';"
	    "UPDATE events SET at=%lld WHERE message_id='old_sent' OR message_id LIKE 'bulk%%';",
	    (long long)old, (long long)old, (long long)old, (long long)(now - 400 * day), (long long)old, (long long)old);
	exec_raw(db, sql);

	CHECK(store_prune(st, now - 30 * day, now - 365 * day, now - 30 * day, now - 400 * day, &p) == 0);
	CHECK(p.jobs == 1202);          /* old_sent, old_failed, bulk* */
	CHECK(p.payloads == 1202);      /* every sent and reported job; new_sent stays a job */
	CHECK(p.webhooks == 0 && p.inbound == 1 && p.threads == 1 && p.replays == 0);
	CHECK(p.events == 1201);        /* the webhook events of bulk* and old_sent */
	{
		sqlite3_stmt *q;
		CHECK(sqlite3_prepare_v2(db, "SELECT group_concat(message_id || ':' || (id IN (SELECT job_id FROM job_payload)), ',') "
		    "FROM (SELECT id, message_id FROM jobs WHERE location_id='LP' ORDER BY message_id)", -1, &q, NULL) == SQLITE_OK);
		CHECK(sqlite3_step(q) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(q, 0),
		    "new_failed:1,new_sent:0,old_pending:1,old_queued:1") == 0);
		sqlite3_finalize(q);
	}
	/* a pruned job's messageId and an old app webhook are still known:
	 * the same signed body re-posted after keep_days is a duplicate */
	CHECK(store_job_add(st, "old_sent", "LP", "Email", NULL, "{}") == 0);
	CHECK(count(db, "SELECT COUNT(*) FROM jobs WHERE message_id='old_sent'") == 0);
	CHECK(store_webhook_seen(st, "wh_old", now) == 0);
	CHECK(count(db, "SELECT COUNT(*) FROM inbound_seen WHERE dedupe_key='in_new'") == 1);
	CHECK(count(db, "SELECT COUNT(*) FROM message_map WHERE rfc_message_id='thread_40d@x'") == 1);
	CHECK(count(db, "SELECT COUNT(*) FROM events WHERE message_id='new_sent' AND kind='webhook'") == 1);
	CHECK(count(db, "SELECT COUNT(*) FROM job_payload WHERE job_id NOT IN (SELECT id FROM jobs)") == 0);
	sqlite3_close(db);

	/* a sent job cannot go again (no payload); a failed one can */
	CHECK(jobs_retry(st, "new_sent") == 0);
	CHECK(jobs_retry(st, "new_failed") == 1);
	/* a second pass finds nothing more */
	CHECK(store_prune(st, now - 30 * day, now - 365 * day, now - 30 * day, now - 400 * day, &p) == 0);
	CHECK(p.jobs + p.payloads + p.webhooks + p.inbound + p.threads + p.events + p.replays == 0);
	/* past replay_days the fingerprints go too, in batches */
	db = open_raw(pdir);
	snprintf(sql, sizeof(sql), "UPDATE replay_guard SET at=%lld", (long long)(now - 401 * day));
	exec_raw(db, sql);
	sqlite3_close(db);
	CHECK(store_prune(st, now - 30 * day, now - 365 * day, now - 30 * day, now - 400 * day, &p) == 0);
	CHECK(p.replays == 1204);       /* the 1202 pruned jobs, 2 app webhooks */
	store_close(st);
	snprintf(sql, sizeof(sql), "rm -rf %s", pdir);
	if (system(sql) != 0)
		fprintf(stderr, "cannot remove %s\n", pdir);
}

/* A schema-4 database holding two jobs and a checkpoint, as mailbridge
 * 0.1 left it: the tables later migrations change or read, and events,
 * which job_add writes. */
static void
make_v4_db(void)
{
	char *path;
	sqlite3 *db;
	if (asprintf(&path, "%s/mailbridge.db", dir) < 0 || sqlite3_open(path, &db) != SQLITE_OK)
		abort();
	free(path);
	if (sqlite3_exec(db,
	    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE,"
	    " location_id TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,"
	    " attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, created_at INTEGER NOT NULL,"
	    " updated_at INTEGER NOT NULL, last_code INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
	    " rfc_message_id TEXT, report_status TEXT, report_state TEXT NOT NULL DEFAULT 'none',"
	    " report_attempts INTEGER NOT NULL DEFAULT 0, report_next_at INTEGER NOT NULL DEFAULT 0,"
	    " report_error TEXT, rcpt_state TEXT);"
	    "CREATE TABLE imap_checkpoints (account TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL,"
	    " last_uid INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
	    "INSERT INTO imap_checkpoints VALUES ('L1', 7, 42, 0);"
	    "CREATE TABLE events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, message_id TEXT,"
	    " kind TEXT NOT NULL, detail TEXT);"
	    "CREATE INDEX events_msg ON events(message_id, id);"
	    "CREATE INDEX jobs_due ON jobs(state, next_at);"
	    "CREATE INDEX jobs_report ON jobs(report_state, report_next_at);"
	    "CREATE TABLE message_map (rfc_message_id TEXT PRIMARY KEY, location_id TEXT NOT NULL,"
	    " ghl_message_id TEXT, email_message_id TEXT, alt_id TEXT, conversation_id TEXT, contact_id TEXT,"
	    " refs TEXT, reply_token TEXT UNIQUE, created_at INTEGER NOT NULL);"
	    "CREATE INDEX message_map_alt ON message_map(location_id, alt_id);"
	    "CREATE TABLE webhook_seen (webhook_id TEXT PRIMARY KEY, received_at INTEGER NOT NULL);"
	    "INSERT INTO webhook_seen VALUES ('wh1', 5);"
	    "INSERT INTO jobs (message_id, location_id, type, payload, state, next_at, created_at, updated_at)"
	    " VALUES ('m1', 'L1', 'Email', '{\"messageId\":\"m1\",\"emailMessageId\":\"e1\"}', 'queued', 0, 0, 0),"
	    " ('m2', 'L1', 'Email', '{\"messageId\":\"m2\",\"emailMessageId\":7}', 'queued', 1, 1, 1);"
	    "PRAGMA user_version=4;", NULL, NULL, NULL) != SQLITE_OK)
		abort();
	sqlite3_close(db);
}

/* The store in dir, opened again. */
static struct store *
scratch_store_reopen(const char *path)
{
	char *err = NULL;
	struct store *st = store_open(path, &err);

	if (!st) {
		fprintf(stderr, "%s: %s\n", path, err);
		free(err);
	}
	return st;
}

/* A store of its own in a new directory (tmpl: a mkdtemp template). */
static struct store *
scratch_store(char *tmpl, const char *who)
{
	struct store *st;
	char *err = NULL;

	if (!mkdtemp(tmpl) || !(st = store_open(tmpl, &err))) {
		fprintf(stderr, "%s: %s\n", who, err ? err : "mkdtemp");
		abort();
	}
	return st;
}

static void
scratch_done(struct store *st, const char *path)
{
	char cmd[128];

	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", path);
	CHECK(system(cmd) == 0);
}

/* A job sent and its status due now. */
static void
sent_with_report(struct store *st, const char *message_id, const char *location_id)
{
	struct job *j = NULL;
	struct job_attempt_rec rec = { .code = 250, .event = "sent" };

	CHECK(store_job_add(st, message_id, location_id, "Email", NULL, "{}") == 1);
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && !strcmp(j->message_id, message_id));
	CHECK(j && jobs_sending(st, j, NULL) == 1);
	CHECK(j && jobs_attempt(st, j, ATTEMPT_SENT, STATUS_DELIVERED, &rec) == 1 && rec.report_due);
	store_job_free(j);
}

/* A location's window is full: its due reports wait, the one a reporter
 * holds and other locations' stay as they are. */
static void
test_defer_location(void)
{
	static char ddir[] = "/tmp/mb-test-defer-XXXXXX";
	struct store *st = scratch_store(ddir, "test_defer_location");
	struct job *rj = NULL, *next = NULL;
	int64_t now = now_ms();

	sent_with_report(st, "d1", "L1");
	sent_with_report(st, "d2", "L1");
	sent_with_report(st, "d3", "L1");
	sent_with_report(st, "d4", "L2");
	CHECK(store_report_claim(st, now + 1000, 60000, &rj) == 1 && rj && !strcmp(rj->message_id, "d1"));
	CHECK(store_report_defer_location(st, "L1", now + 1000, now + 30000) == 2);
	CHECK(store_report_claim(st, now + 1000, 60000, &next) == 1 && next && !strcmp(next->message_id, "d4"));
	store_job_free(next);
	next = NULL;
	CHECK(store_report_claim(st, now + 1000, 60000, &next) == 0);
	/* when the window opens they go in their order; d1 is still leased */
	CHECK(store_report_claim(st, now + 31000, 60000, &next) == 1 && next && !strcmp(next->message_id, "d2"));
	store_job_free(next);
	store_job_free(rj);
	scratch_done(st, ddir);
}

/* An unsubscribe put back for our own window gives its attempt back; a
 * real failure keeps it (the backoff and the give-up count those). */
static void
test_unsub_later(void)
{
	static char udir[] = "/tmp/mb-test-unsub-XXXXXX";
	struct store *st = scratch_store(udir, "test_unsub_later");
	struct unsub *u = NULL;
	int64_t now = now_ms();

	CHECK(store_unsub_add(st, "L1", "c1", "m1", "one-click", NULL, NULL) == 1);
	CHECK(store_unsub_claim(st, now + 1000, 60000, &u) == 1 && u && u->attempts == 1);
	CHECK(u && store_unsub_later(st, u->id, now, "local rate limit", false) == 1);
	store_unsub_free(u);
	u = NULL;
	CHECK(store_unsub_claim(st, now + 1000, 60000, &u) == 1 && u && u->attempts == 1);
	CHECK(u && store_unsub_later(st, u->id, now, "HTTP 503", true) == 1);
	store_unsub_free(u);
	u = NULL;
	CHECK(store_unsub_claim(st, now + 1000, 60000, &u) == 1 && u && u->attempts == 2);
	store_unsub_free(u);
	scratch_done(st, udir);
}

/* An attempt that makes a status due can lease its report at once (the
 * sender hands it to a reporter in memory): no claim takes it meanwhile,
 * and handed back it is due again, the attempt not counted. */
static void
test_report_lease(void)
{
	static char ldir[] = "/tmp/mb-test-lease-XXXXXX";
	struct store *st = scratch_store(ldir, "test_report_lease");
	struct job *j = NULL, *rj = NULL;
	struct job_attempt_rec rec = { .code = 250, .event = "sent", .report_lease_ms = 60000 };

	CHECK(store_job_add(st, "h1", "L1", "Email", NULL, "{}") == 1);
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j);
	CHECK(j && jobs_sending(st, j, NULL) == 1);
	CHECK(j && jobs_attempt(st, j, ATTEMPT_SENT, STATUS_DELIVERED, &rec) == 1 && rec.report_due);
	CHECK(rec.leased && rec.leased->id == j->id && rec.leased->fsm.report == REPORT_PENDING &&
	    rec.leased->fsm.status == STATUS_DELIVERED && rec.leased->report_attempts == 1 && rec.leased->last_code == 250);
	CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj) == 0);
	CHECK(rec.leased && store_report_defer(st, rec.leased->id, now_ms()) == 1);
	CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj) == 1 && rj && rj->report_attempts == 1);
	store_job_free(rj);
	store_job_free(rec.leased);
	store_job_free(j);
	scratch_done(st, ldir);
}

/* Posts' ends written in one commit (the reporter's batch): each row as
 * alone: written with its "status" event, or left as it moved on (a new
 * status during the post stays due, with no event), or not decided (no
 * report pending) and not written. */
static void
test_report_batch(void)
{
	static char bdir[] = "/tmp/mb-test-rbatch-XXXXXX";
	struct store *st;
	struct job *jobs[4] = { NULL }, *rj[3] = { NULL }, *now = NULL;
	struct report_end end[4] = { { REPORT_POSTED, 0, NULL }, { REPORT_POSTED, 0, NULL },
		{ REPORT_LATER, 0, "HTTP 500" }, { REPORT_POSTED, 0, NULL } };
	const char *ids[3] = { "b1", "b2", "b3" };
	char *err = NULL, cmd[128], seen[256];
	int r[4] = { 9, 9, 9, 9 };
	bool due = false;

	if (!mkdtemp(bdir) || !(st = store_open(bdir, &err))) {
		fprintf(stderr, "test_report_batch: %s\n", err ? err : "mkdtemp");
		abort();
	}
	for (int i = 0; i < 3; i++) {
		struct job *j = NULL;
		struct job_attempt_rec rec = { .code = 250, .event = "sent" };
		CHECK(store_job_add(st, ids[i], "L1", "Email", NULL, "{}") == 1);
		CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && !strcmp(j->message_id, ids[i]));
		CHECK(j && jobs_sending(st, j, NULL) == 1);
		CHECK(j && jobs_attempt(st, j, ATTEMPT_SENT, STATUS_DELIVERED, &rec) == 1 && rec.report_due);
		CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj[i]) == 1 && rj[i] &&
		    !strcmp(rj[i]->message_id, ids[i]));
		store_job_free(j);
	}
	/* b2: a DSN while "delivered" is posted */
	CHECK(jobs_dsn(st, "b2", STATUS_FAILED, 550, "no such user", "dsn failed", NULL, NULL, 0, &due) == 1 && due);
	/* the fourth: b1 again, as a copy that was never pending */
	CHECK(store_job_get(st, "b1", &jobs[3]) == 1 && jobs[3]);
	if (jobs[3])
		jobs[3]->fsm.report = REPORT_DONE;
	for (int i = 0; i < 3; i++)
		jobs[i] = rj[i];
	if (jobs[0] && jobs[1] && jobs[2] && jobs[3])
		jobs_report_many(st, jobs, end, 4, r);
	CHECK(r[0] == 1 && r[1] == 0 && r[2] == 1 && r[3] == 0);
	CHECK(jobs[0] && jobs[0]->fsm.report == REPORT_DONE && jobs[2] && jobs[2]->fsm.report == REPORT_PENDING);
	CHECK(store_job_get(st, "b1", &now) == 1 && now && now->fsm.report == REPORT_DONE);
	store_job_free(now);
	CHECK(store_job_get(st, "b2", &now) == 1 && now && now->fsm.report == REPORT_PENDING &&
	    now->fsm.status == STATUS_FAILED);
	store_job_free(now);
	CHECK(store_job_get(st, "b3", &now) == 1 && now && now->fsm.report == REPORT_PENDING && now->report_error &&
	    !strcmp(now->report_error, "HTTP 500"));
	store_job_free(now);
	/* the trace: one "status" for b1, none for the others */
	for (int i = 0; i < 3; i++) {
		const char *status;
		bool ok;

		seen[0] = '\0';
		CHECK(store_events_each(st, ids[i], collect_kinds, seen) >= 0);
		status = strstr(seen, "status:");
		ok = i == 0 ? status && !strncmp(status, "status:delivered", 16) && !strstr(status + 1, "status:") :
		    !status;
		if (!ok)
			fprintf(stderr, "%s events: %s\n", ids[i], seen);
		CHECK(ok);
	}
	for (int i = 0; i < 4; i++)
		store_job_free(jobs[i]);
	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", bdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", bdir);
}

/* The machine over the store: a report that comes while a job is sent
 * or while its status is posted is never lost, whatever the order. The
 * worker and the reporter hold stale copies of the states, as they do. */
static void
test_races(void)
{
	static char rdir[] = "/tmp/mb-test-races-XXXXXX";
	struct store *st;
	struct job *j = NULL, *rj = NULL, *now = NULL;
	char *err = NULL, cmd[128];
	bool due = false;

	if (!mkdtemp(rdir) || !(st = store_open(rdir, &err))) {
		fprintf(stderr, "test_races: %s\n", err ? err : "mkdtemp");
		abort();
	}
	/* a gateway's "failed" during the send: held (early), then it fails
	 * the job although the send went through, keeping the DSN's reason */
	CHECK(store_job_add(st, "r1", "L1", "SMS", NULL, "{}") == 1);
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && j->fsm.job == JOB_CLAIMED);
	CHECK(j && jobs_sending(st, j, NULL) == 1);
	CHECK(jobs_dsn(st, "r1", STATUS_FAILED, 550, "no such handset", "dlr failed", NULL, NULL, 0, &due) == 1 && !due);
	CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj) == 0);   /* early: not due yet */
	{
		struct job_attempt_rec rec = { .code = 250, .error = NULL, .event = "sent" };
		/* j->fsm still says sending/none: the compare fails, it re-reads */
		CHECK(j && jobs_attempt(st, j, ATTEMPT_SENT, STATUS_NONE, &rec) == 1 && rec.keep_error && rec.report_due);
	}
	CHECK(store_job_get(st, "r1", &now) == 1 && now && now->fsm.job == JOB_FAILED &&
	    now->fsm.report == REPORT_PENDING && now->fsm.status == STATUS_FAILED && now->last_error &&
	    !strcmp(now->last_error, "no such handset"));
	store_job_free(now);
	now = NULL;
	/* a new status ("delivered") while "failed" is being posted: the post does
	 * not mark the new status done; it stays due */
	CHECK(store_report_claim(st, now_ms() + 1000, 60000, &rj) == 1 && rj);
	CHECK(jobs_dsn(st, "r1", STATUS_DELIVERED, 0, NULL, "dlr delivered", NULL, NULL, 0, &due) == 1 && due);
	/* ... and no second reporter takes it while the first one posts (the
	 * older post could land last) */
	{
		struct job *twice = NULL;
		int r = store_report_claim(st, now_ms() + 1000, 60000, &twice);
		CHECK(r == 0 || (r == 1 && twice && strcmp(twice->message_id, "r1") != 0));
		store_job_free(twice);
	}
	CHECK(rj && jobs_report(st, rj, REPORT_POSTED, 0, NULL) == 0);
	CHECK(store_job_get(st, "r1", &now) == 1 && now && now->fsm.report == REPORT_PENDING &&
	    now->fsm.status == STATUS_DELIVERED);
	store_job_free(now);
	/* the first one hands it on (outbound.c, report_done): due now */
	CHECK(rj && store_report_defer(st, rj->id, now_ms()) == 1);
	{
		struct job *next = NULL;
		CHECK(store_report_claim(st, now_ms() + 1000, 60000, &next) == 1 && next && !strcmp(next->message_id, "r1"));
		store_job_free(next);
	}
	store_job_free(rj);
	store_job_free(j);
	/* a DSN's recipients merge into those the relay answered (v3's
	 * per-recipient status): bob's DSN result joins his 250 */
	{
		struct job *e = NULL;
		CHECK(store_job_add(st, "r3", "L1", "Email", NULL, "{}") == 1);
		CHECK(jobs_claim(st, now_ms() + 1000, &e) == 1 && e && !strcmp(e->message_id, "r3"));
		CHECK(e && jobs_sending(st, e, NULL) == 1);
		struct job_attempt_rec rec = { .code = 250, .event = "sent",
			.rcpt_state = "{\"bob@x.test\":{\"code\":250,\"text\":\"ok\"},\"al@x.test\":{\"code\":250,\"text\":\"ok\"}}" };
		CHECK(e && jobs_attempt(st, e, ATTEMPT_SENT, STATUS_NONE, &rec) == 1);
		struct engage_add ev[] = { { "permanent_fail", "bob@x.test" } };
		CHECK(jobs_dsn(st, "r3", STATUS_FAILED, 550, "bob@x.test: 5.1.1 no such user", "dsn",
		    "{\"bob@x.test\":{\"code\":550,\"text\":\"5.1.1 no such user\",\"dsn\":\"failed\"}}", ev, 1,
		    &due) == 1);
		test_engagement(st, "r3");
		CHECK(store_job_get(st, "r3", &now) == 1 && now && now->rcpt_state &&
		    strstr(now->rcpt_state, "\"dsn\":\"failed\"") && strstr(now->rcpt_state, "\"al@x.test\":{\"code\":250"));
		if (now && now->rcpt_state && !strstr(now->rcpt_state, "\"dsn\""))
			fprintf(stderr, "  rcpt_state %s\n", now->rcpt_state);
		store_job_free(now);
		now = NULL;
		store_job_free(e);
	}
	/* a DSN for a job never sent, or for none at all, changes nothing */
	CHECK(store_job_add(st, "r2", "L1", "Email", NULL, "{}") == 1);
	CHECK(jobs_dsn(st, "r2", STATUS_FAILED, 550, "x", "x", NULL, NULL, 0, &due) == 0 && !due);
	CHECK(jobs_dsn(st, "nope", STATUS_FAILED, 550, "x", "x", NULL, NULL, 0, &due) == 0);
	/* a crash: claimed and sending go back to the queue, sending ones
	 * uncertain; the rest stays */
	j = NULL;
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && !strcmp(j->message_id, "r2"));
	CHECK(j && jobs_sending(st, j, NULL) == 1);
	CHECK(jobs_recover(st, true) == 1);
	CHECK(store_job_get(st, "r2", &now) == 1 && now && now->fsm.job == JOB_QUEUED && now->uncertain);
	CHECK(jobs_drop(st, "r2") == 1);
	store_job_free(now);
	store_job_free(j);
	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", rdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", rdir);
}

/* Writers and readers on one store at once: SQLite commits the writes of
 * threads that wait for the connection together (store_sqlite.c). Each
 * write must still answer for itself: every job added once, a duplicate
 * messageId a duplicate for all but one, and a job claimed once. */
#define GROUP_THREADS 4
#define GROUP_JOBS 150

struct group_arg {
	struct store *st;
	int who;
	int added, dups, claimed, errors;
};

static atomic_int group_writers;

static void *
group_writer(void *p)
{
	struct group_arg *a = p;
	char mid[64];

	for (int i = 0; i < GROUP_JOBS; i++) {
		struct job *j = NULL;
		int r;

		snprintf(mid, sizeof(mid), "g%d-%d", a->who, i);
		r = store_job_add(a->st, mid, "LG", "Email", NULL, "{\"n\":1}");
		a->added += r == 1;
		a->errors += r < 0;
		/* one messageId every thread adds: one of them stores it */
		snprintf(mid, sizeof(mid), "shared-%d", i);
		r = store_job_add(a->st, mid, "LG", "Email", NULL, "{}");
		a->added += r == 1;
		a->dups += r == 0;
		a->errors += r < 0;
		if ((r = jobs_claim(a->st, now_ms() + 1000, &j)) == 1)
			a->claimed++;
		a->errors += r < 0;
		store_job_free(j);
	}
	atomic_fetch_sub(&group_writers, 1);
	return NULL;
}

static void *
group_reader(void *p)
{
	struct group_arg *a = p;

	while (atomic_load(&group_writers) > 0)
		a->errors += store_job_count(a->st, JOB_QUEUED) < 0;
	return NULL;
}

static void
test_group_commit(void)
{
	char gdir[] = "/tmp/mb-test-group-XXXXXX";
	struct store *st = scratch_store(gdir, "test_group_commit");
	struct group_arg args[GROUP_THREADS + 1];
	pthread_t t[GROUP_THREADS + 1];
	int added = 0, dups = 0, claimed = 0, errors = 0;

	atomic_store(&group_writers, GROUP_THREADS);
	for (int i = 0; i <= GROUP_THREADS; i++) {
		args[i] = (struct group_arg){ .st = st, .who = i };
		CHECK(pthread_create(&t[i], NULL, i < GROUP_THREADS ? group_writer : group_reader, &args[i]) == 0);
	}
	for (int i = 0; i <= GROUP_THREADS; i++) {
		pthread_join(t[i], NULL);
		added += args[i].added;
		dups += args[i].dups;
		claimed += args[i].claimed;
		errors += args[i].errors;
	}
	CHECK(errors == 0);
	CHECK_IDX(added == GROUP_THREADS * GROUP_JOBS + GROUP_JOBS, added);
	CHECK_IDX(dups == (GROUP_THREADS - 1) * GROUP_JOBS, dups);
	/* each claim took its own job, and what is left is still queued */
	CHECK_IDX(claimed + store_job_count(st, JOB_QUEUED) == added, claimed);
	CHECK_IDX(store_job_count(st, JOB_CLAIMED) == claimed, claimed);
	/* and all of it is in the file, for another connection */
	store_close(st);
	st = scratch_store_reopen(gdir);
	CHECK(st && store_job_count(st, JOB_CLAIMED) == claimed);
	scratch_done(st, gdir);
}

/* A batch claim takes the oldest due jobs, each with its payload, oldest
 * first; a job handed back unsent is queued again without its attempt,
 * and is the oldest for the next claim. */
static void
test_claim_batch(void)
{
	char bdir[] = "/tmp/mb-test-batch-XXXXXX";
	struct store *st = scratch_store(bdir, "test_claim_batch");
	struct job **jobs = NULL, *got = NULL;
	const char *ids[] = { "b1", "b2", "b3", "b4", "b5" };
	char payload[64];
	int n;

	for (int i = 0; i < 5; i++) {
		snprintf(payload, sizeof(payload), "{\"messageId\":\"%s\"}", ids[i]);
		CHECK(store_job_add(st, ids[i], "L1", "Email", NULL, payload) == 1);
	}
	n = jobs_claim_batch(st, now_ms() + 1000, 3, &jobs);
	CHECK_IDX(n == 3, n);
	for (int i = 0; i < n; i++) {
		snprintf(payload, sizeof(payload), "{\"messageId\":\"%s\"}", ids[i]);
		CHECK_IDX(!strcmp(jobs[i]->message_id, ids[i]) && jobs[i]->payload && !strcmp(jobs[i]->payload, payload) &&
		    jobs[i]->fsm.job == JOB_CLAIMED && jobs[i]->attempts == 1, i);
	}
	CHECK(n == 3 && jobs_release(st, jobs[1]) == 1 && jobs[1]->fsm.job == JOB_QUEUED);
	CHECK(store_job_get(st, "b2", &got) == 1 && got && got->fsm.job == JOB_QUEUED && got->attempts == 0);
	store_job_free(got);
	/* no second release: it is no longer claimed */
	CHECK(n == 3 && jobs_release(st, jobs[1]) == 0);
	for (int i = 0; i < n; i++)
		store_job_free(jobs[i]);
	free(jobs);
	n = jobs_claim_batch(st, now_ms() + 1000, 8, &jobs);
	CHECK_IDX(n == 3, n);
	CHECK(n == 3 && !strcmp(jobs[0]->message_id, "b2") && !strcmp(jobs[1]->message_id, "b4") &&
	    !strcmp(jobs[2]->message_id, "b5") && jobs[0]->attempts == 1);
	for (int i = 0; i < n; i++)
		store_job_free(jobs[i]);
	free(jobs);
	CHECK(jobs_claim_batch(st, now_ms() + 1000, 8, &jobs) == 0);
	free(jobs);
	CHECK(store_job_count(st, JOB_CLAIMED) == 5 && store_job_count(st, JOB_QUEUED) == 0);
	scratch_done(st, bdir);
}

/* Past 8 MiB of WAL the checkpointer copies it into the database (SQLite
 * did at 1 MiB): 12 MB of payloads that pack to some 9 MB leave the
 * database file grown from its first KiB, the WAL under the 32 MiB at
 * which commits checkpoint themselves, and everything reads back after a
 * reopen. (A checkpoint on a second connection that has not read the
 * database yet does nothing: this is the test that found it.) */
static off_t
file_size(const char *in, const char *name)
{
	char path[256];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", in, name);
	return stat(path, &sb) < 0 ? -1 : sb.st_size;
}

/* The threads of this process other than the main one: how many, and
 * how many of them do not block SIGTERM. */
static void
other_threads(int *n_r, int *takes_term_r)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	*n_r = *takes_term_r = 0;
	while (d && (e = readdir(d)) != NULL) {
		char path[300], line[128];
		unsigned long long blocked = 0;
		FILE *f;
		if (e->d_name[0] == '.' || atoi(e->d_name) == (int)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "SigBlk: %llx", &blocked) == 1)
				break;
		fclose(f);
		(*n_r)++;
		if (!(blocked & (1ULL << (SIGTERM - 1))))
			(*takes_term_r)++;
	}
	if (d)
		closedir(d);
}

static void
test_checkpoint_thread(void)
{
	char cdir[] = "/tmp/mb-test-ckpt-XXXXXX";
	struct store *st = scratch_store(cdir, "test_checkpoint_thread");
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	enum { JOBS = 300, SIZE = 40000 };
	char *payload = malloc(SIZE + 32), id[32];
	uint64_t x = 88172645463325252ULL;
	off_t db0 = file_size(cdir, "mailbridge.db"), db = db0;
	struct job *j = NULL;
	int threads, take_term;

	/* the store opens before the daemon blocks SIGTERM for its sigwait:
	 * its thread must block every signal itself, or a SIGTERM it took
	 * would end the process */
	other_threads(&threads, &take_term);
	CHECK_IDX(threads >= 1 && take_term == 0, threads * 100 + take_term);

	for (int n = 0; n < JOBS; n++) {
		int len = snprintf(payload, 32, "{\"n\":%d,\"x\":\"", n);
		for (int i = 0; i < SIZE; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;   /* xorshift: text that packs little */
			payload[len++] = alphabet[x & 63];
		}
		memcpy(payload + len, "\"}", 3);
		snprintf(id, sizeof(id), "ck%d", n);
		CHECK_IDX(store_job_add(st, id, "L1", "Email", NULL, payload) == 1, n);
	}
	for (int i = 0; i < 100 && db < 4 * 1024 * 1024; i++) {
		usleep(50000);
		db = file_size(cdir, "mailbridge.db");
	}
	CHECK_IDX(db >= 4 * 1024 * 1024, (int)(db / 1024));
	CHECK_IDX(db0 < 1024 * 1024, (int)(db0 / 1024));
	/* the WAL never reached the size at which commits checkpoint themselves */
	CHECK_IDX(file_size(cdir, "mailbridge.db-wal") < 32 * 1024 * 1024 + 65536,
	    (int)(file_size(cdir, "mailbridge.db-wal") / 1024));
	store_close(st);
	st = scratch_store_reopen(cdir);
	CHECK(st && store_job_get(st, "ck299", &j) == 1 && j && store_job_payload(st, j) == 1 && j->payload &&
	    strlen(j->payload) > SIZE && !strncmp(j->payload, "{\"n\":299,", 9));
	store_job_free(j);
	free(payload);
	scratch_done(st, cdir);
}

/* Payloads are packed in SQLite (store_pack.c): stored smaller, read back
 * as written by the claim, store_job_payload, trace and store_copy, and a
 * packed value that does not unpack is an error, not a message. */
static void
count_events(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg)
{
	(void)at;
	(void)message_id;
	(void)kind;
	(void)detail;
	(*(int *)arg)++;
}

static void
test_packed_payloads(void)
{
	char pdir[] = "/tmp/mb-test-pack-XXXXXX", cdir[] = "/tmp/mb-test-packcopy-XXXXXX";
	struct store *st = scratch_store(pdir, "test_packed_payloads"), *to = scratch_store(cdir, "test_packed_payloads");
	size_t n = 200 * 1024;
	char *big = malloc(n + 64), *err = NULL;
	struct job *j = NULL;
	sqlite3 *db;
	int events = 0;

	/* a large payload of text that varies, and a marker to find */
	strcpy(big, "{\"html\":\"");
	for (size_t i = strlen(big); i < n; i++)
		big[i] = (char)('a' + (i * 7919 % 26));
	memcpy(big + n / 2, "needle@pack.test", 16);
	strcpy(big + n, "\"}");
	CHECK(store_job_add(st, "pk1", "LK", "Email", NULL, big) == 1);
	CHECK(store_job_add(st, "pk2", "LK", "Email", NULL, "{}") == 1);
	db = open_raw(pdir);
	CHECK(count(db, "SELECT COUNT(*) FROM job_payload WHERE typeof(payload) = 'blob' AND "
	    "substr(payload, 1, 5) = X'006D627A31'") == 2);
	CHECK(count(db, "SELECT max(length(payload)) FROM job_payload") < (int64_t)n / 2);
	/* trace reads inside it */
	CHECK(store_events_each(st, "needle@pack.test", count_events, &events) > 0 && events > 0);
	/* a copy carries the text */
	CHECK(store_copy(st, to, NULL, NULL, &err) == 1);
	free(err);
	CHECK(jobs_claim(to, now_ms() + 1000, &j) == 1 && j && j->payload && strcmp(j->payload, big) == 0);
	store_job_free(j);
	j = NULL;
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && j->payload && strcmp(j->payload, big) == 0);
	store_job_free(j);
	j = NULL;
	/* one that does not unpack */
	exec_raw(db, "UPDATE job_payload SET payload = X'006D627A310102030405' WHERE job_id = "
	    "(SELECT id FROM jobs WHERE message_id = 'pk2')");
	sqlite3_close(db);
	CHECK(jobs_claim(st, now_ms() + 1000, &j) == 1 && j && !j->payload);
	CHECK(j && store_job_payload(st, j) == -1);
	store_job_free(j);
	free(big);
	scratch_done(to, cdir);
	scratch_done(st, pdir);
}

/* SQLite's heap after the same rows were written and read again through
 * a page cache of cache_kib ([store] cache_kib). */
static int64_t
heap_after_reads(int cache_kib)
{
	char d[] = "/tmp/mb-test-cache-XXXXXX";
	struct store *st;
	char *err = NULL, *body = xmalloc(4096 + 16), id[32];
	int64_t heap = 0, file = 0;
	uint32_t x = 2463534242u;

	if (!mkdtemp(d) || !(st = store_open_conf(&(struct store_conf){ .data_dir = d, .cache_kib = cache_kib },
	    false, &err))) {
		fprintf(stderr, "heap_after_reads: %s\n", err ? err : "mkdtemp");
		abort();
	}
	/* about 1.2 MiB of pages once packed: hex digits pack to half */
	for (int i = 0; i < 600; i++) {
		int n = sprintf(body, "{\"x\":\"");
		for (int k = 0; k < 4096; k++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			body[n++] = "0123456789abcdef"[x & 15];
		}
		strcpy(body + n, "\"}");
		snprintf(id, sizeof(id), "ck%d", i);
		CHECK(store_job_add(st, id, "L1", "Email", NULL, body) == 1);
	}
	for (int i = 0; i < 600; i++) {
		struct job *j = NULL;
		snprintf(id, sizeof(id), "ck%d", i);
		CHECK(store_job_get(st, id, &j) == 1 && j && store_job_payload(st, j) == 1);
		store_job_free(j);
	}
	store_memory(st, &heap, &file);
	CHECK(file > 1024 * 1024);
	free(body);
	scratch_done(st, d);
	return heap;
}

/* [store] cache_kib bounds what the daemon's connection keeps: the same
 * pages leave SQLite's heap at least 0.5 MiB smaller through 64 KiB than
 * through 4 MiB (which holds them all). */
static void
test_cache_kib(void)
{
	int64_t big = heap_after_reads(4096), small = heap_after_reads(64);
	bool bounded = small + 512 * 1024 < big;

	CHECK(bounded);
	if (!bounded)
		fprintf(stderr, "test_cache_kib: heap %lld with 64 KiB, %lld with 4 MiB\n", (long long)small,
		    (long long)big);
}

int
main(void)
{
	struct store *st;
	struct job *j1 = NULL, *j2 = NULL, *j3 = NULL;
	char *err = NULL;

	if (!mkdtemp(dir))
		abort();
	make_v4_db();
	st = store_open(dir, &err);
	CHECK(st != NULL);
	if (!st) {
		fprintf(stderr, "%s\n", err);
		return test_done("test_store");
	}
	CHECK(jobs_claim(st, 10, &j1) == 1 && j1 && strcmp(j1->message_id, "m1") == 0);
	/* the claim reads the payload too, migrated from v4 */
	CHECK(j1 && j1->payload && strstr(j1->payload, "\"emailMessageId\":\"e1\"") && j1->email_message_id &&
	    strcmp(j1->email_message_id, "e1") == 0);
	CHECK(j1 && store_job_payload(st, j1) == 1);
	CHECK(jobs_claim(st, 10, &j2) == 1 && j2 && strcmp(j2->message_id, "m2") == 0);
	CHECK(j2 && j2->email_message_id == NULL);   /* not a string: not an id */
	CHECK(j2 && store_job_payload(st, j2) == 1 && strstr(j2->payload, "\"m2\""));
	{
		/* schema 6: checkpoints keep their place, with no re-read pending */
		struct imap_checkpoint cp;
		CHECK(store_checkpoint_get(st, "L1", &cp) == 1 && cp.uidvalidity == 7 && cp.last_uid == 42 &&
		    cp.rescan_upto == 0);
		cp.rescan_upto = 40;
		CHECK(store_checkpoint_put(st, "L1", &cp) == 1);
		CHECK(store_checkpoint_get(st, "L1", &cp) == 1 && cp.rescan_upto == 40 && cp.last_uid == 42);
	}

	/* schema 9: a key made once, kept, the same on every read */
	{
		unsigned char k1[32], k2[32], k3[32], zero[32] = { 0 };
		CHECK(store_secret(st, "address-token", k1) == 1 && memcmp(k1, zero, 32) != 0);
		CHECK(store_secret(st, "address-token", k2) == 1 && memcmp(k1, k2, 32) == 0);
		CHECK(store_secret(st, "other", k3) == 1 && memcmp(k1, k3, 32) != 0);
	}

	/* schema 8: the replay guard holds what was already seen */
	CHECK(store_webhook_seen(st, "wh1", now_ms()) == 0);
	CHECK(store_webhook_seen(st, "wh2", now_ms()) == 1);

	/* new jobs: stored once, payload apart, duplicates a success */
	CHECK(store_job_add(st, "m3", "L1", "Email", "e3", "{\"messageId\":\"m3\"}") == 1);
	CHECK(store_job_add(st, "m3", "L1", "Email", "e3", "{\"messageId\":\"other\"}") == 0);
	CHECK(jobs_claim(st, now_ms() + 1000, &j3) == 1 && j3 && strcmp(j3->email_message_id, "e3") == 0);
	CHECK(j3 && store_job_payload(st, j3) == 1 && strcmp(j3->payload, "{\"messageId\":\"m3\"}") == 0);
	/* dropping a job drops its payload (ON DELETE CASCADE) */
	CHECK(store_job_add(st, "m4", "L1", "Email", NULL, "{}") == 1);
	CHECK(jobs_drop(st, "m4") == 1);
	{
		char *path;
		sqlite3 *db;
		sqlite3_stmt *q;
		if (asprintf(&path, "%s/mailbridge.db", dir) < 0 || sqlite3_open(path, &db) != SQLITE_OK)
			abort();
		free(path);
		CHECK(sqlite3_prepare_v2(db, "SELECT COUNT(*), SUM(job_id NOT IN (SELECT id FROM jobs)) "
		    "FROM job_payload", -1, &q, NULL) == SQLITE_OK);
		CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 3 && sqlite3_column_int(q, 1) == 0);
		sqlite3_finalize(q);
		sqlite3_close(db);
	}
	store_job_free(j1);
	store_job_free(j2);
	store_job_free(j3);
	store_close(st);
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	test_prune();
	test_journey();
	test_report_batch();
	/* read-only: nothing created where there is no store; an existing
	 * one reads, and refuses writes */
	{
		struct stat sb;
		char *e = NULL, ghost[] = "/tmp/mb-test-ro-XXXXXX", *sub;
		struct store *ro;
		if (!mkdtemp(ghost) || asprintf(&sub, "%s/data", ghost) < 0)
			abort();
		CHECK(store_open_readonly(sub, &e) == NULL && e && strstr(e, "has not run"));
		CHECK(stat(sub, &sb) < 0);
		free(e);
		e = NULL;
		ro = store_open(sub, &e);
		CHECK(ro != NULL);
		store_close(ro);
		ro = store_open_readonly(sub, &e);
		CHECK(ro != NULL);
		CHECK(ro && store_job_count(ro, JOB_QUEUED) == 0);
		CHECK(ro && store_job_add(ro, "ro1", "L1", "Email", NULL, "{}") == -1);
		store_close(ro);
		free(sub);
		if (asprintf(&sub, "rm -rf %s", ghost) < 0 || system(sub) != 0)
			fprintf(stderr, "cannot remove %s\n", ghost);
		free(sub);
	}
	test_races();
	test_defer_location();
	test_unsub_later();
	test_report_lease();
	test_claim_batch();
	test_checkpoint_thread();
	test_group_commit();
	test_packed_payloads();
	test_cache_kib();
	return test_done("test_store");
}
