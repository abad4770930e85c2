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

size_t
smtp_conn_max_size(const struct smtp_conn *c)
{
	if (!c || !c->s || !(c->s->esmtp & MAILSMTP_ESMTP_SIZE))
		return 0;
	return c->s->smtp_max_msg_size;
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

static void
copy_reply(struct smtp_reply *to, const struct smtp_reply *from)
{
	free(to->text);
	to->code = from->code;
	to->text = xstrdup(from->text ? from->text : "");
}

/* More lines than this in one reply: a broken or hostile relay. */
#define SMTP_REPLY_MAX_LINES 100

/* Reads one whole reply into out, as libetpan's own reader does (text
 * after the code, lines joined by a space): libetpan has no call that
 * reads a reply without sending a command, which pipelining needs.
 * Returns the code, or 0 if the stream failed or the reply is malformed. */
static int
read_reply(mailstream *stream, struct smtp_reply *out)
{
	MMAPString *line = mmap_string_new(""), *text = mmap_string_new("");
	int code = 0;

	for (int n = 0; n < SMTP_REPLY_MAX_LINES; n++) {
		const char *l = mailstream_read_line_remove_eol(stream, line);
		int c;
		if (!l || strlen(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
		    l[2] < '0' || l[2] > '9' || (l[3] && l[3] != ' ' && l[3] != '-'))
			break;
		c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		if (n > 0 && c != code)
			break;             /* a multi-line reply changed its code */
		code = c;
		if (n > 0)
			mmap_string_append_c(text, ' ');
		mmap_string_append(text, l[3] ? l + 4 : "");
		if (l[3] != '-')
			goto done;
	}
	code = 0;
done:
	free(out->text);
	out->code = code;
	out->text = xstrdup(code ? text->str : "no valid reply (connection lost or malformed)");
	mmap_string_free(line);
	mmap_string_free(text);
	return code;
}

/* Appends s to buf as RFC 3461 xtext (ENVID): '+', '=' and anything
 * outside '!'..'~' become +XX. */
static void
append_xtext(MMAPString *buf, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < '!' || ch > '~' || ch == '+' || ch == '=') {
			char hex[4];
			snprintf(hex, sizeof(hex), "+%02X", ch);
			mmap_string_append(buf, hex);
		} else
			mmap_string_append_c(buf, (char)ch);
	}
}

/* RFC 2920 pipelining: MAIL, every RCPT and DATA leave in one write and
 * their replies are read in order, one round trip instead of two plus one
 * per recipient. The commands are those libetpan would send. DATA is in
 * the batch, so before_data runs before it. 0 when the relay is ready for
 * the body; -1 with *state_r (the stage that failed) and res filled. */
static int
envelope_pipelined(struct smtp_conn *c, const struct smtp_envelope *env, int (*before_data)(void *),
    void *arg, struct smtp_result *res, size_t *accepted, enum smtp_state *state_r, bool *broken)
{
	bool dsn = (c->s->esmtp & MAILSMTP_ESMTP_DSN) != 0;
	MMAPString *cmd = mmap_string_new("");
	struct smtp_reply data = { 0 };
	int mail_code, data_code, r = -1;
	bool lost = false;

	mmap_string_append(cmd, "MAIL FROM:<");
	mmap_string_append(cmd, env->mail_from);
	mmap_string_append(cmd, ">");
	if (dsn) {
		mmap_string_append(cmd, " RET=HDRS");
		if (env->dsn && env->envid) {
			mmap_string_append(cmd, " ENVID=");
			append_xtext(cmd, env->envid);
		}
	}
	mmap_string_append(cmd, "\r\n");
	for (size_t i = 0; i < env->n_rcpts; i++) {
		mmap_string_append(cmd, "RCPT TO:<");
		mmap_string_append(cmd, env->rcpts[i]);
		mmap_string_append(cmd, dsn && env->dsn ? "> NOTIFY=SUCCESS,FAILURE,DELAY\r\n" : ">\r\n");
	}
	mmap_string_append(cmd, "DATA\r\n");
	*state_r = SMTP_MAIL;
	if (before_data && before_data(arg) < 0) {
		mmap_string_free(cmd);
		set_error(res, "not sent: the send could not be recorded");
		res->aborted = true;
		return -1;
	}
	if (mailstream_write(c->s->stream, cmd->str, cmd->len) < 0 || mailstream_flush(c->s->stream) < 0) {
		mmap_string_free(cmd);
		set_error(res, "connection lost while sending the envelope");
		return -1;
	}
	mmap_string_free(cmd);

	/* every command gets its reply, whatever came before: read them all
	 * so that the session stays in step (or is found dead) */
	mail_code = read_reply(c->s->stream, &res->reply);
	lost = mail_code == 0;
	for (size_t i = 0; i < env->n_rcpts && !lost; i++) {
		int code = read_reply(c->s->stream, &res->rcpt[i]);
		lost = code == 0;
		if (code / 100 == 2)
			(*accepted)++;
	}
	data_code = lost ? 0 : read_reply(c->s->stream, &data);
	if (data_code == 0) {
		*state_r = mail_code == 0 ? SMTP_MAIL : SMTP_RCPT;
		set_error(res, "connection lost while reading the envelope's replies");
		*broken = true;
		goto out;
	}
	if (data_code == 354 && (mail_code / 100 != 2 || *accepted == 0)) {
		/* a relay that takes DATA with nothing to deliver: end it empty */
		struct smtp_reply end = { 0 };
		if (mailstream_write(c->s->stream, ".\r\n", 3) < 0 || mailstream_flush(c->s->stream) < 0 ||
		    read_reply(c->s->stream, &end) == 0)
			*broken = true;
		free(end.text);
	}
	if (mail_code / 100 != 2) {
		*state_r = SMTP_MAIL;   /* res->reply is MAIL's */
	} else if (*accepted == 0) {
		*state_r = SMTP_RCPT;   /* the per-recipient replies say why; keep the last one too */
		copy_reply(&res->reply, &res->rcpt[env->n_rcpts - 1]);
	} else if (data_code != 354) {
		*state_r = SMTP_DATA;
		copy_reply(&res->reply, &data);
	} else {
		*state_r = SMTP_BODY;
		r = 0;
	}
out:
	free(data.text);
	return r;
}

int
smtp_send(struct smtp_conn **connp, const struct smtp_params *p, const struct smtp_envelope *env,
    const char *msg, size_t len, int (*before_data)(void *), void *arg, struct smtp_result *res)
{
	struct smtp_conn *c = *connp;
	enum smtp_state state;
	bool keep = false, tls_done = false, broken = false, fresh_tried = false;
	size_t accepted;
	char *err = NULL;
	int r;

	if (c && !smtp_conn_matches(c, p)) {
		smtp_conn_drop(c);
		c = NULL;
	}
again:
	memset(res, 0, sizeof(*res));
	res->rcpt = xcalloc(env->n_rcpts + 1, sizeof(*res->rcpt));
	res->rcpt[env->n_rcpts].code = -1;
	state = SMTP_CONNECT;
	accepted = 0;
	tls_done = broken = false;
	/* a kept connection is used without a NOOP first: if the relay has
	 * closed it meanwhile, the envelope fails unanswered and is sent once
	 * more on a new connection (below), which costs only then */
	if (c) {
		res->reused = true;
		/* what its EHLO offered still holds (a DSN-mode message on a
		 * kept connection was taken as "no DSN", and reported delivered
		 * at once: found when a burst left connections to reuse) */
		res->dsn_offered = (c->s->esmtp & MAILSMTP_ESMTP_DSN) != 0;
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
			if (c->s->esmtp & MAILSMTP_ESMTP_PIPELINING) {
				if (envelope_pipelined(c, env, before_data, arg, res, &accepted, &state, &broken) < 0)
					goto fail;
				break;      /* on to SMTP_BODY */
			}
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
				copy_reply(&res->reply, &res->rcpt[env->n_rcpts - 1]);
				goto fail;
			}
			state = SMTP_DATA;
			break;
		case SMTP_DATA:
			if (before_data && before_data(arg) < 0) {
				set_error(res, "not sent: the send could not be recorded");
				res->aborted = true;
				goto fail;
			}
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
	/* a kept connection the relay had closed (no reply, or 421 closing)
	 * before anything reached it: once more on a new one */
	if (res->reused && !fresh_tried && !res->aborted && state < SMTP_BODY && (res->reply.code == 0 || res->reply.code == 421)) {
		log_debug("smtp: %s:%d kept connection gone (%s); reconnecting", p->host, p->port,
		    res->reply.text ? res->reply.text : "-");
		fresh_tried = true;
		smtp_conn_drop(c);
		c = NULL;
		smtp_result_clear(res);
		goto again;
	}
	/* a clean refusal leaves the session usable after RSET; anything
	 * without a reply (timeout, TLS, stream) is never reused */
	if (!broken && res->reply.code >= 400 && state >= SMTP_MAIL) {
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
