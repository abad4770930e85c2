/* store_private: the engine's insides, for the store's own files
 * (store/ is a private include directory: nothing outside the store
 * library can include this). The seam between the aggregate files
 * (store_jobs.c, store_threads.c, ...), which hold the SQL and the policy,
 * and the two backends (store_sqlite.c, store_pg.c), which run it. */
#ifndef MB_STORE_PRIVATE_H
#define MB_STORE_PRIVATE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/* One result row, valid only during the callback that is handed it: the
 * backend's statement or result, and the row's index in it. */
struct store_row {
	const struct store_ops *ops;
	void *impl;
	int row;
};
typedef void store_row_fn(const struct store_row *row, void *arg);

/* What a backend provides (store_sqlite.c, store_pg.c). SQL reaches it as
 * written in the aggregate files: a dialect both engines read, with ?N
 * parameters (see store_pg.c for the little it translates). fmt binds
 * args: 'i' int64_t, 's' const char * (NULL binds NULL), 'b' const void *
 * and size_t (a blob; NULL binds NULL). A fmt starting with '*' takes
 * one argument instead, an array of struct store_val, one per letter. */
struct store_val {
	bool null;
	int64_t i;                 /* 'i' */
	const void *p;             /* 's' (a string) or 'b' (len bytes) */
	size_t len;
};
struct store_ops {
	const char *name;
	bool shared;               /* several instances can run on it */
	/* one statement in its own commit: rows changed, or -1 (logged); a
	 * uniqueness conflict is 0 changed. durable: on disk on return */
	int (*exec)(struct store *st, bool durable, const char *sql, const char *fmt, va_list ap);
	/* up to max rows to fn: how many, or -1 (logged) */
	int (*query)(struct store *st, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt,
	    va_list ap);
	/* a transaction, begun and ended on the calling thread */
	int (*tx_begin)(struct store *st, const char *what);
	/* extra: a failure undoes this statement alone; fn (may be NULL)
	 * gets up to max rows (RETURNING); rows changed or returned, or -1 */
	int (*tx_step)(struct store *st, bool extra, int max, store_row_fn *fn, void *arg, const char *sql,
	    const char *fmt, va_list ap);
	int (*tx_end)(struct store *st, const char *what, bool durable);
	/* a step whose answer is not waited for (store_tx_trace,
	 * store_tx_later): it may be sent later, with the next step or the
	 * commit, and its rows go to fn (may be NULL) when they come; 0 or
	 * -1. NULL: the engine runs it at once */
	int (*tx_trace)(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap);
	/* steps sent later save round trips (store_job_add groups webhooks) */
	bool pipelined;
	void (*tx_fail)(struct store *st);   /* the open transaction is to roll back */
	void (*close)(struct store *st);
	int (*backup)(struct store *st, const char *path, int64_t *bytes_r, char **error_r);
	void (*memory)(struct store *st, int64_t *heap_r, int64_t *file_r);
	/* row readers (see store_col_* below) */
	bool (*col_null)(const struct store_row *r, int i);
	int64_t (*col_int)(const struct store_row *r, int i);
	const char *(*col_str)(const struct store_row *r, int i);
	const void *(*col_blob)(const struct store_row *r, int i, size_t *len_r);
};

struct store {
	const struct store_ops *ops;
	void *be;                  /* the backend's own state */
	struct store_packer *packer;   /* payloads packed (store_pack.c), or NULL: kept as written */
	bool have_token_key;
	unsigned char token_key[32];
	char *instance;            /* this process among those sharing the store */
	int64_t lease_ms;          /* a silent instance's claims last this long */
	struct job_adds *adds;     /* webhooks' jobs added in groups (pipelined engines), or NULL */
};

/* Grouped job adds (store_jobs.c): made when a pipelined store opens for
 * writing, freed when it closes. */
struct job_adds *store_job_adds_new(void);
void store_job_adds_free(struct job_adds *a);

/* A claimed row (jobs, inbound_spool) whose claimer cannot finish it: no
 * owner (claimed before owners were kept), ours when mine is not 0 (a
 * restart: what the last run held), or another instance with no
 * heartbeat at or after stale. The arguments name parameters ("?4"). */
#define STORE_ORPHAN(me, mine, stale) "(owner IS NULL OR (owner = " me " AND " mine " <> 0) OR (owner <> " me \
	" AND owner NOT IN (SELECT name FROM instances WHERE heartbeat_at >= " stale ")))"

/* In a claim's inner SELECT: FOR UPDATE SKIP LOCKED on PostgreSQL, where
 * instances claim side by side; a comment to SQLite (one writer). */
#define STORE_SKIP_LOCKED "/*skip locked*/"

/* Payloads packed with zlib (store_pack.c), for an engine that does not
 * compress large values itself (SQLite; PostgreSQL's TOAST does). A packed
 * value starts with a NUL byte; store_unpack reads a value written before
 * packing, or by a store that does not pack, as it is. Both return
 * malloc'd memory, or NULL (cannot pack; corrupt). In SQL,
 * mb_payload(value) is the text either way, on both engines. */
struct store_packer *store_packer_new(void);
void store_packer_free(struct store_packer *p);
void *store_pack(struct store_packer *p, const char *text, size_t len, size_t *len_r);
char *store_unpack(struct store_packer *p, const void *data, size_t len);

/* The replay guard's fingerprint of kind and key ("job", a messageId):
 * 12 bytes of SHA-256 over "kind:key", as mb_fp('kind:' || key) in SQL
 * on both engines (store.c). */
#define STORE_FP_LEN 12
void store_fp(const char *kind, const char *key, unsigned char fp[STORE_FP_LEN]);
void store_fp_text(const void *text, size_t len, unsigned char fp[STORE_FP_LEN]);

/* The schema: entry i moves version i to i+1, per backend (store.c). */
struct store_migration {
	const char *sqlite;
	const char *pg;            /* NULL: covered by the first PostgreSQL entry */
};
extern const struct store_migration store_migrations[];
extern const int store_schema_version;

/* Opening a backend: *st_r set up and migrated, or NULL with *error_r. */
struct store *store_sqlite_open(const char *data_dir, bool readonly, int cache_kib, char **error_r);
struct store *store_pg_open(const char *dsn, int pool, bool readonly, char **error_r);

int store_exec(struct store *st, const char *sql, const char *fmt, ...);
int store_exec_durable(struct store *st, const char *sql, const char *fmt, ...);
/* Several writes in one commit: store_tx_begin, then steps, then
 * store_tx_end (commits, or rolls back if a step failed): 0 or -1.
 * store_tx_extra is a step that may fail alone (a trace event);
 * store_tx_row hands a step's first returned row to fn. */
int store_tx_begin(struct store *st, const char *what);
int store_tx_step(struct store *st, const char *sql, const char *fmt, ...);
int store_tx_step_v(struct store *st, bool extra, const char *sql, const char *fmt, va_list ap);
int store_tx_extra(struct store *st, const char *sql, const char *fmt, ...);
/* A step with no key to meet (a trace event; an outbox row ON CONFLICT DO
 * NOTHING) and no answer to read: it fails only when the transaction
 * does. SQLite runs it as an extra; PostgreSQL sends it with the next
 * statement (store_pg.c), without a savepoint. 0, or -1. */
int store_tx_trace(struct store *st, const char *sql, const char *fmt, ...);
/* A step whose rows are read when they come, which may be at the next
 * step or at the commit (PostgreSQL's pipeline): fn gets every row then,
 * and is called only if the step succeeded. SQLite runs it at once. A
 * failure fails the transaction. 0, or -1. */
int store_tx_later(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...);
int store_tx_later_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap);
int store_tx_row(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...);
int store_tx_row_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap);
int store_tx_end(struct store *st, const char *what, bool durable);
/* Something outside the steps failed: store_tx_end rolls back. */
void store_tx_fail(struct store *st);
/* First row to fn: 1, 0 none, -1 error (logged). */
int store_query_row(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...);
int store_query_row_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt,
    va_list ap);
/* Every row to fn: how many, or -1 (logged). */
int store_query_rows(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...);

/* A column of a row: NULL reads as 0, or as a NULL pointer. */
bool store_col_null(const struct store_row *r, int i);
int64_t store_col_int(const struct store_row *r, int i);
const char *store_col_str(const struct store_row *r, int i);
const void *store_col_blob(const struct store_row *r, int i, size_t *len_r);
/* a column's text, copied (NULL stays NULL) */
char *store_col_text(const struct store_row *r, int i);
/* Row readers for store_query_row. */
void store_row_int64(const struct store_row *r, void *arg);    /* NULL: -1 */
void store_row_text(const struct store_row *r, void *arg);
void store_row_none(const struct store_row *r, void *arg);

#define EVENT_TABLE "events (at, message_id, kind, detail, location_id)"
#define EVENT_INSERT "INSERT INTO " EVENT_TABLE " VALUES (?1,?2,?3,?4,?5)"

/* An engagement event (store_engage.h), in a caller's commit: ?1 message,
 * ?2 event, ?3 who, ?4 location, ?5 now. */
#define ENGAGE_INTO "INSERT INTO engagement (message_id, event, who, location_id, created_at, next_at) "
#define ENGAGE_INSERT ENGAGE_INTO "VALUES (?1,?2,?3,?4,?5,?5) ON CONFLICT DO NOTHING"

#define MSGMAP_INSERT "INSERT INTO message_map (rfc_message_id, location_id, ghl_message_id, " \
	"email_message_id, alt_id, conversation_id, contact_id, refs, reply_token, created_at) "
#define MSGMAP_UPSERT MSGMAP_INSERT "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) " MSGMAP_ON_CONFLICT
#define MSGMAP_ON_CONFLICT "ON CONFLICT(rfc_message_id) DO UPDATE SET " \
	"ghl_message_id=COALESCE(excluded.ghl_message_id, message_map.ghl_message_id), " \
	"email_message_id=COALESCE(excluded.email_message_id, message_map.email_message_id), " \
	"alt_id=COALESCE(excluded.alt_id, message_map.alt_id), conversation_id=COALESCE(excluded.conversation_id, message_map.conversation_id), " \
	"contact_id=COALESCE(excluded.contact_id, message_map.contact_id) " \
	/* another location's copy of the same message (our mail landing in a \
	 * mailbox another location reads, or a stranger reusing an id) never \
	 * rewrites this location's thread */ \
	"WHERE message_map.location_id = excluded.location_id"
#define MSGMAP_ARGS(m) (m)->rfc_message_id, (m)->location_id, (m)->ghl_message_id, (m)->email_message_id, \
	(m)->alt_id, (m)->conversation_id, (m)->contact_id, (m)->references, (m)->reply_token, now_ms()

#endif
