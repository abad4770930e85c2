/* store: the only module that speaks SQL. One SQLite database (WAL)
 * under the data directory, file mode 0600, schema migrated by
 * user_version.
 *
 * Writes that acknowledge something outside (webhook intake, tokens,
 * inbound posts, app-webhook dedupe) are fsynced before they return; the
 * others survive a process crash and may repeat work after a power cut.
 * All functions are thread-safe (one connection behind a mutex).
 * Return convention: 1 = yes/found/done, 0 = no/not found/duplicate,
 * -1 = store error (already logged here, where it is handled). */
#ifndef MB_STORE_H
#define MB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inbound_fsm.h"
#include "job.h"

struct store;

/* Jobs carry the states of fsm/job.h: the store persists them by name
 * and decides none of them. A transition is written by compare-and-set:
 * the caller names the state it read (from) and the one it chose (to);
 * the row changes only if it is still in from. Those functions return 1
 * written, 0 when the row has moved on (re-read it and decide again: see
 * mailbridge/jobs.c), -1 on a store error. */
struct job {
	int64_t id;
	char *message_id;          /* HighLevel messageId (unique) */
	char *location_id;
	char *type;                /* "Email", "SMS", ... */
	char *payload;             /* the validated webhook JSON: NULL until store_job_payload() */
	char *email_message_id;    /* the webhook's emailMessageId, or NULL */
	struct job_fsm fsm;        /* state, report_state, report_status */
	int attempts;
	int64_t next_at;           /* ms since epoch */
	int64_t created_at;
	int last_code;             /* last SMTP (or plugin) code, 0 if none */
	char *last_error;
	char *rfc_message_id;      /* our Message-ID, without <> */
	int report_attempts;
	char *report_error;
	char *rcpt_state;          /* JSON {addr: {code, text}} of finished rcpts */
	bool uncertain;            /* the last attempt ended after our final dot with no
	                            * reply: the relay may hold it (see relaylog.h) */
};

void store_job_free(struct job *job);

/* Opens (creating data_dir and the database as needed) and migrates. */
struct store *store_open(const char *data_dir, char **error_r);
void store_close(struct store *st);
int store_ping(struct store *st);

/* Jobs */
/* Stores a webhook's job and payload, with its "webhook" event, durably
 * (on disk before it returns). 1 added, 0 a duplicate messageId (only the
 * event is added), -1 error. */
int store_job_add(struct store *st, const char *message_id, const char *location_id,
    const char *type, const char *email_message_id, const char *payload);
/* Loads job->payload (kept apart from the job row). 1, 0 gone, -1 error. */
int store_job_payload(struct store *st, struct job *job);
/* The oldest job in state from due by now goes to state to (attempts+1). */
int store_job_claim(struct store *st, int64_t now, enum job_state from, enum job_state to, struct job **job_r);
/* Earliest next_at among jobs in state waiting, or -1 when none. */
int64_t store_job_next_due(struct store *st, enum job_state waiting);
/* The job's states as stored now: 1, 0 gone, -1 error. */
int store_job_fsm(struct store *st, int64_t id, struct job_fsm *fsm_r);
struct msgmap;
/* Right before DATA: the send state moves (to "sending": a crash from
 * here on makes it uncertain), and m, the threading record replies will
 * need, is stored in the same commit. Compare-and-set on the send state
 * only (a report may come meanwhile). */
int store_job_mark_sending(struct store *st, int64_t id, enum job_state from, enum job_state to,
    const struct msgmap *m);
/* What an attempt's end writes besides the states. */
struct job_attempt_rec {
	int64_t next_at;           /* the next attempt, for a retry */
	int code;                  /* the relay's (or plugin's) code, 0 none */
	const char *error;
	bool keep_error;           /* leave last_error as it is (an early report's reason) */
	bool report_due;           /* a status is to be posted now */
	const char *rcpt_state;    /* non-NULL: replaces the per-recipient record */
	bool uncertain;            /* ended after the final dot with no reply */
	const char *event;         /* the "send" event for the trace, in the same commit */
};
/* Ends an attempt: compare-and-set on both states. */
int store_job_finish(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, const struct job_attempt_rec *a);
/* After a crash: every job in state from goes to state to; uncertain
 * ones are marked so, with error as their last error. Returns how many. */
int store_job_move_all(struct store *st, enum job_state from, enum job_state to, bool uncertain,
    const char *error);
int store_job_get(struct store *st, const char *message_id, struct job **job_r);
/* Calls fn for each job (newest first, at most limit). */
int store_job_list(struct store *st, int limit, void (*fn)(const struct job *, void *), void *arg);
/* An operator's retry: due at next_at, if its payload is still kept. */
int store_job_retry(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, int64_t next_at);
/* Deletes the job if it is still in from's send state. */
int store_job_drop(struct store *st, const struct job *job, const struct job_fsm *from);
int store_job_count(struct store *st, enum job_state state);
/* ms since the oldest unfinished job was received (0 when none). */
int64_t store_job_oldest_queued_age(struct store *st);
/* SQLite's heap (page cache, statements) and the database's size in bytes. */
void store_memory(struct store *st, int64_t *heap_r, int64_t *file_r);

/* Status reports: claim takes a due pending report with a lease of
 * lease_ms, so two reporters never post the same report and a crash only
 * delays it. */
int store_report_claim(struct store *st, int64_t now, int64_t lease_ms, struct job **job_r);
/* The post ended: compare-and-set on the report's state and status (a
 * new status that came during the post stays to be posted). next_at: when
 * to try again. posted, if set, is the status HighLevel took: a "status"
 * event for the trace, in the same commit. */
int store_report_finish(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, int64_t next_at, const char *error, const char *posted);
/* Puts a claimed report back for next_at without counting the attempt
 * (it was never sent: our own rate limiter held it). */
int store_report_defer(struct store *st, int64_t id, int64_t next_at);
/* A delivery report (DSN, gateway) moved the states: its code and error
 * (if any) are the job's last, the report's attempts start again, due now
 * when report_due. event: the "dsn" trace event, in the same commit. */
int store_job_dsn(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, bool report_due, int code, const char *error, const char *event);

/* Makes the location's waiting reports due now (after a re-install). */
int store_report_wake_location(struct store *st, const char *location_id);

/* Message map: our RFC 5322 Message-ID <-> HighLevel ids. */
struct msgmap {
	char *rfc_message_id;
	char *location_id;
	char *ghl_message_id;
	char *email_message_id;
	char *alt_id;
	char *conversation_id;
	char *contact_id;
	char *references;          /* the chain this message continues, "<a> <b>" */
	char *reply_token;
};
void store_msgmap_free(struct msgmap *m);
int store_msgmap_put(struct store *st, const struct msgmap *m);
/* What a map entry is looked up by. */
enum msgmap_key {
	MSGMAP_BY_RFC,             /* our or the sender's Message-ID */
	MSGMAP_BY_GHL,             /* HighLevel's messageId */
	MSGMAP_BY_EMAIL,           /* HighLevel's emailMessageId (the thread) */
	MSGMAP_BY_ALT,             /* the altId we posted (custom mode) */
	MSGMAP_BY_TOKEN,           /* the reply/bounce token */
};
/* The newest entry of location_id with that key: 1, 0 none, -1 error. */
int store_msgmap_get(struct store *st, enum msgmap_key by, const char *location_id,
    const char *key, struct msgmap **m_r);

/* Tokens (OAuth) per location. */
struct token {
	char *location_id;
	char *user_type;
	char *company_id;
	char *access_token;
	char *refresh_token;
	int64_t expires_at;
	char *scope;
	bool needs_reinstall;
};
void store_token_free(struct token *t);
int store_token_put(struct store *st, const struct token *t);
int store_token_get(struct store *st, const char *location_id, struct token **t_r);
int store_token_delete(struct store *st, const char *location_id);
int store_token_mark_reinstall(struct store *st, const char *location_id);

/* IMAP checkpoints: per account (location), UIDVALIDITY and the highest
 * UID whose message is recorded. */
struct imap_checkpoint {
	uint32_t uidvalidity;
	uint32_t last_uid;         /* every UID up to it is done */
	uint32_t rescan_upto;      /* after a UIDVALIDITY change: UIDs up to it are re-read
	                            * only if recent enough for the dedupe table; 0 none */
};
int store_checkpoint_get(struct store *st, const char *account, struct imap_checkpoint *c);
int store_checkpoint_put(struct store *st, const char *account, const struct imap_checkpoint *c);

/* Inbound dedupe by (location, key = Message-ID or header hash), in the
 * states of fsm/inbound_fsm.h (failed ones keep their raw message for
 * `inbound retry`). state_r: IN_NEW when there is no record. 1 found, 0
 * none, -1 error. */
int store_inbound_state(struct store *st, const char *location_id, const char *key, enum inbound_state *state_r);
int store_inbound_record(struct store *st, const char *location_id, const char *key, enum inbound_state state,
    const char *ghl_message_id, const char *error, const char *summary, const void *raw, size_t raw_len);
/* HighLevel took the message: the "posted" record, the threading record m
 * (if any) and the trace events ("reply" under the parent's id, if any;
 * "inbound" under the new one) in one durable commit. */
int store_inbound_posted(struct store *st, const char *location_id, const char *key, const char *ghl_message_id,
    const char *summary, const struct msgmap *m, const char *parent_ghl_id, const char *event);
struct inbound_row {
	const char *location_id, *key, *ghl_message_id, *error, *summary;
	enum inbound_state state;
	int attempts;
	int64_t created_at;
};
/* Records in state (IN_NEW: all). */
int store_inbound_list(struct store *st, enum inbound_state state, void (*fn)(const struct inbound_row *, void *),
    void *arg);
int store_inbound_raw(struct store *st, const char *location_id, const char *key, char **raw_r, size_t *len_r);

/* Tokens at rest are sealed with AES-256-GCM once a key is set. */
void store_set_token_key(struct store *st, const unsigned char key[32]);

/* IMAP watcher state per location, for `mailbridge accounts`. */
int store_watcher_state(struct store *st, const char *location_id, const char *state, const char *detail);
int store_watcher_get(struct store *st, const char *location_id, char **state_r, char **detail_r, int64_t *at_r);

/* The app was uninstalled from a location (UNINSTALL webhook): its
 * watcher stops until it is installed again. */
int store_set_installed(struct store *st, const char *location_id, bool installed);
int store_is_uninstalled(struct store *st, const char *location_id);

/* Plugins' key-value pairs, namespaced by plugin name. */
int store_kv_put(struct store *st, const char *plugin, const char *key, const char *value);
int store_kv_get(struct store *st, const char *plugin, const char *key, char **value_r);

/* Message journey: one row per event (webhook, smtp, status, dsn, reply,
 * inbound), kept [store] events_days. */
int store_event(struct store *st, const char *message_id, const char *kind, const char *detail);
/* Events for a HighLevel messageId, an RFC Message-ID (no <>), or an
 * email address / phone number, oldest first. Returns how many. */
int store_events_each(struct store *st, const char *key, void (*fn)(int64_t at, const char *message_id,
    const char *kind, const char *detail, void *arg), void *arg);

/* Retention: forgets finished work so the store stays the size of its
 * window. Payloads of sent jobs go at once; finished jobs and the webhook
 * and inbound dedupe records created before keep_before; Message-ID map
 * entries (reply threading) before threads_before; events before
 * events_before (ms since the epoch). Never a queued or in-flight job, nor
 * one whose status is still to be reported. Runs in small batches, so it
 * can run beside the daemon's work. 0, or -1 on a store error. */
struct store_pruned {
	int64_t payloads, jobs, webhooks, inbound, threads, events, replays;
};
int store_prune(struct store *st, int64_t keep_before, int64_t threads_before, int64_t events_before,
    int64_t replays_before, struct store_pruned *r);

/* A 32-byte key of the store's own, made at random on first use and kept
 * in it (so a backup of the store carries it): 1, or -1 on a store error. */
int store_secret(struct store *st, const char *name, unsigned char key_r[32]);

/* Marketplace webhook replay protection (the replay guard, kept
 * replay_days): 1 first time, 0 seen before. */
int store_webhook_seen(struct store *st, const char *webhook_id, int64_t now);

#endif
