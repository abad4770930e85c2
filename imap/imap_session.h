/* imap_session: one mailbox's blocking IMAP work with libetpan: connect
 * (TLS verified by netstream before LOGIN), select, catch up by UID,
 * hand each new message to the sink, flag it, mark it, and start or end
 * IDLE. Never called from two threads at once for one session (the
 * watcher hands a session to exactly one worker at a time). */
#ifndef MB_IMAP_SESSION_H
#define MB_IMAP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_sink.h"

struct imap_session {
	const struct imap_mailbox *mb;
	const struct imap_sink *sink;
	void *imap;                /* mailimap *, NULL when disconnected */
	uint32_t uidvalidity;
	uint32_t last_uid;
	uint32_t rescan_upto;      /* see struct imap_checkpoint */
	uint32_t *window;          /* UIDs recent enough to re-read, sorted; per connection */
	size_t n_window;
	bool have_window;
	bool window_all;           /* the server would not search: re-read all */
	bool has_idle;
	bool idling;
	uint32_t exists_seen;      /* EXISTS count when the last catch-up began */
};

/* 0 connected and selected, -1 error (*error_r malloc'd; session closed). */
int imap_session_connect(struct imap_session *s, char **error_r);

/* Processes every message above the mark. 0 all done, 1 a message must
 * be retried later (the sink said so; the mark stops before it), -1
 * connection trouble or a mark that could not be written (*error_r;
 * caller closes). */
int imap_session_catchup(struct imap_session *s, char **error_r);

/* True when the server announced messages (untagged EXISTS, which may
 * ride on any response) after the last catch-up began. */
bool imap_session_pending(const struct imap_session *s);

/* Enters IDLE; returns the socket to wait on, or -1 (*error_r). */
int imap_session_idle_start(struct imap_session *s, char **error_r);
/* True when libetpan already holds unread bytes (epoll would not wake). */
bool imap_session_buffered(const struct imap_session *s);
int imap_session_idle_done(struct imap_session *s, char **error_r);

/* A cheap liveness check for servers without IDLE (NOOP). */
int imap_session_noop(struct imap_session *s, char **error_r);

/* Drops the connection. polite: LOGOUT first (bounded by the timeout). */
void imap_session_close(struct imap_session *s, bool polite);

#endif
