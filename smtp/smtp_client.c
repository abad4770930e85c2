#include "smtp_client.h"
#include "log.h"
#include "netstream.h"
#include "util.h"

#include <libetpan/libetpan.h>
#include <stdlib.h>
#include <string.h>

struct smtp_conn {
	mailsmtp *s;
	char *key;                 /* host:port:tls:user, for reuse checks */
};

static const char *const smtp_state_names[] = {
	[SMTP_CONNECT] = "connect", [SMTP_EHLO] = "ehlo", [SMTP_STARTTLS] = "starttls",
	[SMTP_EHLO2] = "ehlo-after-tls", [SMTP_AUTH] = "auth",
	[SMTP_MAIL] = "mail", [SMTP_RCPT] = "rcpt", [SMTP_DATA] = "data", [SMTP_BODY] = "end-of-data",
	[SMTP_DONE] = "done",
};

const char *
smtp_state_name(enum smtp_state s)
{
	return s <= SMTP_DONE ? smtp_state_names[s] : "?";
}

bool
smtp_address_ok(const char *a)
{
	size_t len = strlen(a);
	const char *at = strchr(a, '@');
	/* libetpan builds commands with snprintf into 512 bytes, unescaped */
	return len >= 3 && len <= 254 && at && at != a && at[1] && !strchr(at + 1, '@') &&
	    !strpbrk(a, "\r\n<> \t\"");
}

static char *
conn_key(const struct smtp_params *p)
{
	return xasprintf("%s:%d:%d:%d:%s", p->host, p->port, (int)p->tls, (int)p->tls_verify,
	    p->user ? p->user : "");
}

bool
smtp_conn_matches(const struct smtp_conn *c, const struct smtp_params *p)
{
	char *k = conn_key(p);
	bool same = c && strcmp(c->key, k) == 0;
	free(k);
	return same;
}

/* Drops a broken connection without QUIT (mailsmtp_free would send one
 * and block on a dead peer). */
static void
smtp_conn_drop(struct smtp_conn *c)
{
	if (!c)
		return;
	if (c->s->stream) {
		mailstream_close(c->s->stream);
		c->s->stream = NULL;
	}
	mailsmtp_free(c->s);
	free(c->key);
	free(c);
}

void
smtp_conn_close(struct smtp_conn *c)
{
	if (!c)
		return;
	if (c->s->stream)
		mailsmtp_quit(c->s);
	smtp_conn_drop(c);
}

void
smtp_result_clear(struct smtp_result *r)
{
	free(r->reply.text);
	if (r->rcpt) {
		/* n is not stored: the array ends with a sentinel code of -1 */
		for (struct smtp_reply *x = r->rcpt; x->code != -1; x++)
			free(x->text);
		free(r->rcpt);
	}
	memset(r, 0, sizeof(*r));
}

/* Copies libetpan's last reply (text without the trailing newline). */
static void
take_reply(mailsmtp *s, struct smtp_reply *out)
{
	const char *t = s->response ? s->response : "";
	size_t len = strlen(t);

	while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r'))
		len--;
	free(out->text);
	out->code = s->response_code;
	out->text = strndup(t, len);
	/* multi-line replies: one line for logs and HighLevel */
	for (char *p = out->text; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

static void
set_error(struct smtp_result *res, const char *text)
{
	free(res->reply.text);
	res->reply.code = 0;
	res->reply.text = xstrdup(text);
}

int
smtp_send(struct smtp_conn **connp, const struct smtp_params *p, const struct smtp_envelope *env,
    const char *msg, size_t len, void (*before_data)(void *), void *arg, struct smtp_result *res)
{
	struct smtp_conn *c = *connp;
	enum smtp_state state = SMTP_CONNECT;
	bool keep = false, tls_done = false;
	size_t accepted = 0;
	char *err = NULL;
	int r;

	memset(res, 0, sizeof(*res));
	res->rcpt = xcalloc(env->n_rcpts + 1, sizeof(*res->rcpt));
	res->rcpt[env->n_rcpts].code = -1;

	if (c && (!smtp_conn_matches(c, p) || (c->s->response_code = 0, mailsmtp_noop(c->s)) != MAILSMTP_NO_ERROR)) {
		smtp_conn_drop(c);
		c = NULL;
	}
	if (c) {
		res->reused = true;
		state = SMTP_MAIL;
	}

	while (state != SMTP_DONE) {
		log_debug("smtp: %s:%d state=%s", p->host, p->port, smtp_state_name(state));
		if (c)
			c->s->response_code = 0;
		switch (state) {
		case SMTP_CONNECT: {
			struct netstream_tls tls = { p->tls_verify, p->ca_file };
			mailstream *stream;
			c = xcalloc(1, sizeof(*c));
			c->key = conn_key(p);
			c->s = mailsmtp_new(0, NULL);
			mailsmtp_set_timeout(c->s, p->timeout);
			/* our stream: certificates verified in the handshake, poll()
			 * not select(), no Nagle delay on the final dot (netstream.h) */
			stream = netstream_connect(p->host, p->port, p->tls == TLS_MODE_IMPLICIT ? &tls : NULL,
			    p->timeout, NETSTREAM_BUFFER_BULK, &err);
			if (!stream) {
				set_error(res, err);
				free(err);
				goto fail;
			}
			netstream_smtp_replies(stream);
			r = mailsmtp_connect(c->s, stream);
			if (r != MAILSMTP_NO_ERROR) {
				if (c->s->response_code >= 400)
					take_reply(c->s, &res->reply);   /* 554 greeting */
				else
					set_error(res, mailsmtp_strerror(r));
				goto fail;
			}
			tls_done = p->tls == TLS_MODE_IMPLICIT;
			state = SMTP_EHLO;
			break;
		}
		case SMTP_EHLO:
		case SMTP_EHLO2:
			r = mailesmtp_ehlo(c->s);
			/* a pre-ESMTP relay answers EHLO with 500, 502 or 504 (RFC
			 * 5321 4.1.4): say HELO, unless TLS or AUTH needs ESMTP */
			if (r != MAILSMTP_NO_ERROR && c->s->response_code >= 500 && c->s->response_code < 600 &&
			    p->tls == TLS_MODE_NONE && !p->user) {
				c->s->response_code = 0;
				r = mailsmtp_helo(c->s);
			}
			if (r != MAILSMTP_NO_ERROR) {
				take_reply(c->s, &res->reply);
				goto fail;
			}
			res->dsn_offered = (c->s->esmtp & MAILSMTP_ESMTP_DSN) != 0;
			if (p->tls == TLS_MODE_STARTTLS && !tls_done)
				state = SMTP_STARTTLS;
			else
				state = p->user ? SMTP_AUTH : SMTP_MAIL;
			break;
		case SMTP_STARTTLS: {
			struct netstream_tls tls = { p->tls_verify, p->ca_file };
			if (!(c->s->esmtp & MAILSMTP_ESMTP_STARTTLS)) {
				/* never fall back to plain text once TLS is configured */
				set_error(res, "relay does not offer STARTTLS (smtp_tls = starttls)");
				goto fail;
			}
			r = mailesmtp_starttls(c->s);
			if (r != MAILSMTP_NO_ERROR) {
				take_reply(c->s, &res->reply);
				goto fail;
			}
			if (netstream_starttls(c->s->stream, p->host, &tls, &err) < 0) {
				set_error(res, err);
				free(err);
				goto fail;
			}
			tls_done = true;
			state = SMTP_EHLO2;
			break;
		}
		case SMTP_AUTH:
			if (!tls_done && p->tls != TLS_MODE_NONE) {
				set_error(res, "refusing AUTH without TLS");
				goto fail;
			}
			if (!(c->s->auth & (MAILSMTP_AUTH_PLAIN | MAILSMTP_AUTH_LOGIN))) {
				set_error(res, "relay offers no AUTH PLAIN or LOGIN");
				goto fail;
			}
			r = mailsmtp_auth_type(c->s, p->user, p->password,
			    (c->s->auth & MAILSMTP_AUTH_PLAIN) ? MAILSMTP_AUTH_PLAIN : MAILSMTP_AUTH_LOGIN);
			if (r != MAILSMTP_NO_ERROR) {
				if (c->s->response_code >= 400)
					take_reply(c->s, &res->reply);
				else
					set_error(res, "authentication failed (is libsasl2-modules installed?)");
				goto fail;
			}
			state = SMTP_MAIL;
			break;
		case SMTP_MAIL:
			r = mailesmtp_mail(c->s, env->mail_from, 0, env->dsn ? env->envid : NULL);
			if (r != MAILSMTP_NO_ERROR) {
				take_reply(c->s, &res->reply);
				goto fail;
			}
			state = SMTP_RCPT;
			break;
		case SMTP_RCPT:
			for (size_t i = 0; i < env->n_rcpts; i++) {
				c->s->response_code = 0;
				r = mailesmtp_rcpt(c->s, env->rcpts[i], env->dsn ? (MAILSMTP_DSN_NOTIFY_SUCCESS |
				    MAILSMTP_DSN_NOTIFY_FAILURE | MAILSMTP_DSN_NOTIFY_DELAY) : 0, NULL);
				take_reply(c->s, &res->rcpt[i]);
				if (r == MAILSMTP_NO_ERROR)
					accepted++;
				else if (c->s->response_code == 0) {
					take_reply(c->s, &res->reply);
					goto fail;
				}
			}
			if (accepted == 0) {
				/* the per-recipient replies say why; keep the last one too */
				free(res->reply.text);
				res->reply.code = res->rcpt[env->n_rcpts - 1].code;
				res->reply.text = xstrdup(res->rcpt[env->n_rcpts - 1].text);
				goto fail;
			}
			state = SMTP_DATA;
			break;
		case SMTP_DATA:
			if (before_data)
				before_data(arg);
			r = mailsmtp_data(c->s);
			if (r != MAILSMTP_NO_ERROR) {
				take_reply(c->s, &res->reply);
				goto fail;
			}
			state = SMTP_BODY;
			break;
		case SMTP_BODY:
			/* libetpan appends CRLF.CRLF itself: drop our final CRLF */
			if (len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n')
				len -= 2;
			r = mailsmtp_data_message(c->s, msg, len);
			take_reply(c->s, &res->reply);
			if (r != MAILSMTP_NO_ERROR)
				goto fail;
			state = SMTP_DONE;
			break;
		case SMTP_DONE:
			break;
		}
	}
	res->failed_at = SMTP_DONE;
	*connp = c;
	return 0;

fail:
	res->failed_at = state;
	/* a clean refusal leaves the session usable after RSET; anything
	 * without a reply (timeout, TLS, stream) is never reused */
	if (res->reply.code >= 400 && state >= SMTP_MAIL) {
		c->s->response_code = 0;
		keep = mailsmtp_reset(c->s) == MAILSMTP_NO_ERROR;
	}
	if (!keep) {
		smtp_conn_drop(c);
		c = NULL;
	}
	*connp = c;
	return -1;
}
