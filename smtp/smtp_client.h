/* smtp_client: one SMTP transaction over a (reusable) connection, with
 * libetpan. Knows nothing about HighLevel or jobs: it takes parameters,
 * an envelope and the message bytes, and returns what the server said,
 * per stage and per recipient. Blocking; one connection per thread.
 *
 * Certificates (chain and host name) are verified in the TLS handshake,
 * before EHLO-after-TLS and AUTH (netstream.c), unless tls_verify is off. */
#ifndef MB_SMTP_CLIENT_H
#define MB_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "tls_mode.h"

enum smtp_state {
	SMTP_CONNECT, SMTP_EHLO, SMTP_STARTTLS, SMTP_EHLO2, SMTP_AUTH,
	SMTP_MAIL, SMTP_RCPT, SMTP_DATA, SMTP_BODY, SMTP_DONE,
};
const char *smtp_state_name(enum smtp_state s);

struct smtp_params {
	const char *host;
	int port;
	enum tls_mode tls;
	bool tls_verify;
	const char *ca_file;
	const char *user;          /* NULL: no AUTH */
	const char *password;
	int timeout;               /* seconds per command */
};

struct smtp_envelope {
	const char *mail_from;     /* return path (addr only) */
	const char *const *rcpts;
	size_t n_rcpts;
	const char *envid;         /* DSN ENVID, or NULL */
	bool dsn;                  /* ask NOTIFY=SUCCESS,FAILURE,DELAY RET=HDRS if offered */
};

struct smtp_reply {
	int code;                  /* 0: no reply (connection or TLS trouble) */
	char *text;                /* server text (enhanced code first), malloc'd */
};

struct smtp_result {
	enum smtp_state failed_at; /* SMTP_DONE on success */
	struct smtp_reply reply;   /* reply that ended the session (or DATA's) */
	struct smtp_reply *rcpt;   /* one per envelope rcpt, same order */
	bool dsn_offered;          /* the relay advertised DSN */
	bool reused;               /* sent on a cached connection */
	bool aborted;              /* before_data said no: the message was not sent */
};

void smtp_result_clear(struct smtp_result *r);

struct smtp_conn;

/* Sends one message. *conn may be NULL (a new connection is made) or a
 * cached one for the same params (used as it is; if the relay has closed
 * it, the message goes once more on a new connection). On return *conn is
 * the connection to keep, or NULL when it was dropped. With PIPELINING
 * (RFC 2920) MAIL, RCPT and DATA go in one write. before_data, when set,
 * runs right before DATA is sent, or before that write (the job is marked
 * "sending" there); if it returns -1 nothing more is sent (res->aborted,
 * a temporary failure without a reply). Returns 0 when the message was accepted for at least
 * one recipient, -1 otherwise; details in res either way. */
int smtp_send(struct smtp_conn **conn, const struct smtp_params *p, const struct smtp_envelope *env,
    const char *msg, size_t len, int (*before_data)(void *), void *arg, struct smtp_result *res);

/* QUITs (politely, bounded by the timeout) and frees. NULL is fine. */
void smtp_conn_close(struct smtp_conn *conn);

/* The message size the relay advertised (EHLO SIZE), 0 when it gave none. */
size_t smtp_conn_max_size(const struct smtp_conn *conn);

/* True when this connection was opened with the same relay parameters. */
bool smtp_conn_matches(const struct smtp_conn *conn, const struct smtp_params *p);

/* Validates an envelope address: no CR/LF/NUL/<>/space, 3-254 bytes, one @. */
bool smtp_address_ok(const char *addr);

#endif
