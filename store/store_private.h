/* store_private: the engine's insides, for the store's own files
 * (store/ is a private include directory: nothing outside the store
 * library can include this). One SQLite connection behind a mutex, a
 * statement cache, group commit, and small helpers every aggregate file
 * (store_jobs.c, store_threads.c, ...) writes its SQL with. */
#ifndef MB_STORE_PRIVATE_H
#define MB_STORE_PRIVATE_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define STORE_BUSY_TIMEOUT_MS 5000

#define STORE_STMT_CACHE 128

struct store {
	sqlite3 *db;
	pthread_mutex_t lock;
	bool have_token_key;
	unsigned char token_key[32];
	/* prepared statements keyed by their SQL text's address: every SQL
	 * string here is a literal, so the pointer names the statement, and
	 * parsing SQL once instead of per call is most of our store CPU */
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STORE_STMT_CACHE];

	/* Group commit for durable writes (store_sync_upto): every commit is
	 * NORMAL (WAL appended, not synced); a write that acknowledges
	 * something waits until an fdatasync of the WAL file covers it. One
	 * fsync then covers every commit made while the previous one ran,
	 * instead of each FULL commit holding `lock` through its own fsync. */
	char *wal_path;
	int wal_fd;                /* ours, opened lazily; -1 until then */
	atomic_uint_fast64_t committed;   /* commits so far */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	uint64_t synced;           /* commits known to be on disk */
	bool syncing;              /* a thread is in fdatasync() */
	bool tx_failed;            /* a step of the open store_tx_begin failed */
};

/* Statements by their SQL text (a literal: its address names it). */
void store_log_error(struct store *st, const char *what);
sqlite3_stmt *store_stmt(struct store *st, const char *sql);
void store_stmt_done(struct store *st, sqlite3_stmt *stmt);
int store_unlock_write(struct store *st, bool durable);
/* fmt binds args: 'i' int64_t, 's' const char * (NULL binds NULL), 'b'
 * const void * and size_t (a blob; NULL binds NULL).
 * Returns sqlite3_changes() or -1 (logged); durable ones wait for fsync. */
int store_exec(struct store *st, const char *sql, const char *fmt, ...);
int store_exec_durable(struct store *st, const char *sql, const char *fmt, ...);
/* Several writes in one commit (see store.c). */
int store_tx_begin(struct store *st, const char *what);
int store_tx_step(struct store *st, const char *sql, const char *fmt, ...);
int store_tx_step_v(struct store *st, bool extra, const char *sql, const char *fmt, va_list ap);
int store_tx_extra(struct store *st, const char *sql, const char *fmt, ...);
int store_tx_end(struct store *st, const char *what, bool durable);
/* First row to fn: 1, 0 none, -1 error (logged). */
int store_query_row(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, ...);
int store_query_row_v(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, va_list ap);
/* Every row to fn: how many, or -1 (logged). */
int store_query_rows(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, ...);
/* Row readers for store_query_row; a column's text, copied (NULL stays NULL). */
char *store_col_text(sqlite3_stmt *stmt, int i);
void store_row_int64(sqlite3_stmt *stmt, void *arg);
void store_row_text(sqlite3_stmt *stmt, void *arg);
void store_row_none(sqlite3_stmt *stmt, void *arg);

#define EVENT_INSERT "INSERT INTO events (at, message_id, kind, detail, location_id) VALUES (?1,?2,?3,?4,?5)"

/* An engagement event (store_engage.h), in a caller's commit: ?1 message,
 * ?2 event, ?3 who, ?4 location, ?5 now. */
#define ENGAGE_INSERT "INSERT OR IGNORE INTO engagement (message_id, event, who, location_id, created_at, next_at) " \
	"VALUES (?1,?2,?3,?4,?5,?5)"

#define MSGMAP_UPSERT "INSERT INTO message_map (rfc_message_id, location_id, ghl_message_id, " \
	"email_message_id, alt_id, conversation_id, contact_id, refs, reply_token, created_at) " \
	"VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) ON CONFLICT(rfc_message_id) DO UPDATE SET " \
	"ghl_message_id=COALESCE(excluded.ghl_message_id, ghl_message_id), " \
	"email_message_id=COALESCE(excluded.email_message_id, email_message_id), " \
	"alt_id=COALESCE(excluded.alt_id, alt_id), conversation_id=COALESCE(excluded.conversation_id, conversation_id), " \
	"contact_id=COALESCE(excluded.contact_id, contact_id) " \
	/* another location's copy of the same message (our mail landing in a \
	 * mailbox another location reads, or a stranger reusing an id) never \
	 * rewrites this location's thread */ \
	"WHERE message_map.location_id = excluded.location_id"
#define MSGMAP_ARGS(m) (m)->rfc_message_id, (m)->location_id, (m)->ghl_message_id, (m)->email_message_id, \
	(m)->alt_id, (m)->conversation_id, (m)->contact_id, (m)->references, (m)->reply_token, now_ms()

#endif
