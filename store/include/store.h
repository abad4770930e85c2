/* store: the only module that speaks SQL. Two backends behind one API:
 * SQLite (the default: one database file, WAL, under the data directory,
 * mode 0600, schema migrated by user_version) and PostgreSQL (several
 * mailbridge instances on one database, schema in mb_schema).
 *
 * Writes that acknowledge something outside (webhook intake, tokens,
 * inbound posts, app-webhook dedupe) are fsynced before they return; the
 * others survive a process crash and may repeat work after a power cut.
 * All functions are thread-safe.
 * Return convention: 1 = yes/found/done, 0 = no/not found/duplicate,
 * -1 = store error (already logged here, where it is handled).
 *
 * This header is the engine: opening, closing, health. The tables are
 * reached through one header per aggregate, each over the same engine
 * (store_private.h, seen by store/ alone):
 *   store_jobs.h     outbound jobs and their status reports
 *   store_threads.h  the Message-ID map (reply threading)
 *   store_inbound.h  received-message dedupe, IMAP marks, watcher states
 *   store_tokens.h   OAuth tokens (sealed at rest) and the store's own keys
 *   store_kv.h       plugins' key-value pairs, the app-webhook replay guard
 *   store_events.h   the message journey (trace events) and retention
 *   store_engage.h   the engagement outbox; store_unsub.h unsubscribes
 * Each is written once, over the seam in store_private.h. */
#ifndef MB_STORE_H
#define MB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/* [store] in the configuration. */
struct store_conf {
	const char *backend;       /* "sqlite" (NULL too) or "postgresql" */
	const char *data_dir;      /* sqlite: where mailbridge.db lives */
	const char *dsn;           /* postgresql: a libpq connection string or URI */
	int pool;                  /* postgresql: connections (0: 4) */
	int cache_kib;             /* sqlite: the page cache of the daemon's connection (0: 512) */
};

/* Opens the configured backend and migrates it (readonly: neither, and
 * the schema must be this binary's). NULL with *error_r (malloc'd). */
struct store *store_open_conf(const struct store_conf *c, bool readonly, char **error_r);
/* "sqlite" or "postgresql" */
const char *store_backend_name(const struct store *st);

/* SQLite under data_dir: opens (creating data_dir and the database as needed) and migrates. */
struct store *store_open(const char *data_dir, char **error_r);
/* For commands that only read (accounts, queue list, trace, ...): the
 * store must exist at the schema this binary reads; nothing is created,
 * migrated or written, and a permission error says which user to be. */
struct store *store_open_readonly(const char *data_dir, char **error_r);
void store_close(struct store *st);
int store_ping(struct store *st);

/* A consistent copy of the whole database (SQLite's online backup API:
 * one read snapshot, while the daemon keeps writing) at path, mode 0600,
 * written beside it and renamed into place, synced. It holds the store's
 * keys (reply and bounce addresses, token sealing). 1, or -1 with
 * *error_r (malloc'd); *bytes_r is its size. */
int store_backup(struct store *st, const char *path, int64_t *bytes_r, char **error_r);
/* SQLite's heap (page cache, statements) and the database's size in bytes. */
void store_memory(struct store *st, int64_t *heap_r, int64_t *file_r);

#endif
