/* store: schema 5 moves payloads out of the jobs table; an existing
 * database must come through with every job, its payload and its
 * emailMessageId, and job_add must keep storing each webhook once. */
#include "store.h"
#include "test.h"
#include "util.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

static char dir[] = "/tmp/mb-test-store-XXXXXX";

/* A schema-4 database holding two jobs, as mailbridge 0.1 left it (only
 * the jobs table matters to migration 5; the others are created as v1-v4
 * did, so store_open() finds a consistent schema). */
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
	    "CREATE INDEX jobs_due ON jobs(state, next_at);"
	    "CREATE INDEX jobs_report ON jobs(report_state, report_next_at);"
	    "INSERT INTO jobs (message_id, location_id, type, payload, state, next_at, created_at, updated_at)"
	    " VALUES ('m1', 'L1', 'Email', '{\"messageId\":\"m1\",\"emailMessageId\":\"e1\"}', 'queued', 0, 0, 0),"
	    " ('m2', 'L1', 'Email', '{\"messageId\":\"m2\",\"emailMessageId\":7}', 'queued', 1, 1, 1);"
	    "PRAGMA user_version=4;", NULL, NULL, NULL) != SQLITE_OK)
		abort();
	sqlite3_close(db);
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
	CHECK(store_job_claim(st, 10, &j1) == 1 && j1 && strcmp(j1->message_id, "m1") == 0);
	CHECK(j1 && j1->payload == NULL && j1->email_message_id && strcmp(j1->email_message_id, "e1") == 0);
	CHECK(j1 && store_job_payload(st, j1) == 1 && strstr(j1->payload, "\"emailMessageId\":\"e1\""));
	CHECK(store_job_claim(st, 10, &j2) == 1 && j2 && strcmp(j2->message_id, "m2") == 0);
	CHECK(j2 && j2->email_message_id == NULL);   /* not a string: not an id */
	CHECK(j2 && store_job_payload(st, j2) == 1 && strstr(j2->payload, "\"m2\""));

	/* new jobs: stored once, payload apart, duplicates a success */
	CHECK(store_job_add(st, "m3", "L1", "Email", "e3", "{\"messageId\":\"m3\"}") == 1);
	CHECK(store_job_add(st, "m3", "L1", "Email", "e3", "{\"messageId\":\"other\"}") == 0);
	CHECK(store_job_claim(st, now_ms() + 1000, &j3) == 1 && j3 && strcmp(j3->email_message_id, "e3") == 0);
	CHECK(j3 && store_job_payload(st, j3) == 1 && strcmp(j3->payload, "{\"messageId\":\"m3\"}") == 0);
	/* dropping a job drops its payload (ON DELETE CASCADE) */
	CHECK(store_job_add(st, "m4", "L1", "Email", NULL, "{}") == 1);
	CHECK(store_job_drop(st, "m4") == 1);
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
	job_free(j1);
	job_free(j2);
	job_free(j3);
	store_close(st);
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return test_done("test_store");
}
