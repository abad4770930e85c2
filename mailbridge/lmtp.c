#include "lmtp.h"
#include "app.h"
#include "config.h"
#include "inbound.h"
#include "log.h"
#include "netaddr.h"
#include "store_threads.h"
#include "thread.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LMTP_MAX_LINE     2048    /* a command line (RFC 5321 asks for 512) */
#define LMTP_MAX_RCPTS    100
#define LMTP_TIMEOUT_MS   (5 * 60 * 1000)
/* A location's HighLevel window is full: the session waits for room up
 * to this long (Postfix waits 10 min for our reply, and its sessions to
 * us are few, so a wait here slows Postfix down as it should); past it,
 * 451 and Postfix's own queue backoff */
#define LMTP_WINDOW_WAIT_MS (30 * 1000)

struct lmtp_conn;

struct lmtp_server {
	struct app *app;
	int fd;
	char *unix_path;           /* a UNIX socket we created, removed at stop */
	const struct netaddr_list *allow;   /* TCP peers allowed (the configuration's) */
	long max_sessions;
	pthread_t thread;
	volatile int stop;
	pthread_mutex_t lock;
	pthread_cond_t idle;       /* signalled when a session ends */
	struct lmtp_conn *conns;   /* sessions running, under lock */
	int active;
};

struct lmtp_conn {
	struct lmtp_server *srv;
	struct lmtp_conn *next, *prev;
	int fd;
	char buf[8192];
	size_t len, off;
};

static int
conn_getc(struct lmtp_conn *c)
{
	if (c->off == c->len) {
		struct pollfd p = { c->fd, POLLIN, 0 };
		ssize_t n;
		if (poll(&p, 1, LMTP_TIMEOUT_MS) <= 0)
			return -1;
		n = recv(c->fd, c->buf, sizeof(c->buf), 0);
		if (n <= 0)
			return -1;
		c->len = (size_t)n;
		c->off = 0;
	}
	return (unsigned char)c->buf[c->off++];
}

/* One command line without CRLF into line; -1 on EOF/timeout, -2 when
 * too long (the rest of it is read and dropped). */
static int
conn_line(struct lmtp_conn *c, char *line, size_t max, size_t *len_r)
{
	size_t n = 0;
	bool toolong = false;
	for (;;) {
		int ch = conn_getc(c);
		if (ch < 0)
			return -1;
		if (ch == '\n')
			break;
		if (n + 1 < max)
			line[n++] = (char)ch;
		else
			toolong = true;
	}
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	*len_r = n;
	return toolong ? -2 : 0;
}

/* The message after DATA, dot-unstuffed, lines kept whole whatever their
 * length: only the message size limit bounds it. */
struct lmtp_msg {
	char *p;
	size_t len, cap;
	bool over;                 /* past INBOUND_MAX_MESSAGE: refused, not cut */
};

static void
msg_put(struct lmtp_msg *m, const char *data, size_t n)
{
	if (m->over)
		return;
	if (m->len + n > INBOUND_MAX_MESSAGE) {
		m->over = true;
		return;
	}
	if (m->len + n + 1 > m->cap) {
		m->cap = (m->len + n + 1) * 2;
		m->p = xrealloc(m->p, m->cap);
	}
	memcpy(m->p + m->len, data, n);
	m->len += n;
}

/* Reads DATA up to the lone dot. 0, or -1 when the peer went away. */
static int
conn_data(struct lmtp_conn *c, struct lmtp_msg *m)
{
	bool bol = true;           /* at the beginning of a line */
	for (;;) {
		int ch = conn_getc(c);
		if (ch < 0)
			return -1;
		if (bol && ch == '.') {
			int next = conn_getc(c);
			if (next < 0)
				return -1;
			if (next == '\r') {
				int nl = conn_getc(c);
				if (nl < 0)
					return -1;
				if (nl == '\n')
					return 0;          /* the end */
				msg_put(m, "\r", 1);      /* ".\rX": an unstuffed line that merely starts so */
				ch = nl;
			} else if (next == '\n') {
				return 0;
			} else {
				ch = next;             /* dot-unstuffing: drop the first dot */
			}
		}
		if (ch == '\n') {
			/* normalise to CRLF: a bare LF from the wire becomes CRLF */
			if (!(m->len > 0 && m->p[m->len - 1] == '\r'))
				msg_put(m, "\r", 1);
			msg_put(m, "\n", 1);
			bol = true;
			continue;
		}
		{
			char b = (char)ch;
			msg_put(m, &b, 1);
		}
		bol = false;
	}
}

static void __attribute__((format(printf, 2, 3)))
reply(struct lmtp_conn *c, const char *fmt, ...)
{
	char out[LMTP_MAX_LINE];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(out, sizeof(out) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(out) - 3)
		n = (int)sizeof(out) - 3;
	out[n++] = '\r';
	out[n++] = '\n';
	(void)!send(c->fd, out, (size_t)n, MSG_NOSIGNAL);
}

/* Extracts the address between < and > after a "FROM:" / "TO:" verb. */
static char *
path_arg(const char *arg)
{
	const char *lt = strchr(arg, '<'), *gt = lt ? strchr(lt, '>') : NULL;
	if (!lt || !gt)
		return NULL;
	return strndup(lt + 1, (size_t)(gt - lt - 1));
}

const struct location_config *
lmtp_route(struct app *app, const char *rcpt)
{
	const struct config *cfg = app->cfg;
	const char *at = strrchr(rcpt, '@');
	const struct location_config *first = NULL;

	if (!at)
		return NULL;
	for (size_t i = 0; i < cfg->n_locations; i++) {
		const struct location_config *loc = &cfg->locations[i];
		if (loc->from_addr && !strcasecmp(loc->from_addr, rcpt))
			return loc;
		/* the reply mailbox itself (sales@ of a shared domain) */
		if (loc->reply_box.local && (size_t)(at - rcpt) == strlen(loc->reply_box.local) &&
		    !strncasecmp(rcpt, loc->reply_box.local, (size_t)(at - rcpt)) && !strcasecmp(at + 1, loc->reply_box.domain))
			return loc;
		if (loc->lmtp_addresses) {
			char *list = xstrdup(loc->lmtp_addresses), *save = NULL;
			bool hit = false;
			for (char *a = strtok_r(list, " ,", &save); a && !hit; a = strtok_r(NULL, " ,", &save))
				hit = !strcasecmp(a, rcpt);
			free(list);
			if (hit)
				return loc;
		}
	}
	for (size_t i = 0; i < cfg->n_locations; i++) {
		const struct location_config *loc = &cfg->locations[i];
		/* a token in one of the location's reply or bounce forms */
		for (int bounce = 0; bounce < 2; bounce++) {
			char *token = thread_token_of(loc, bounce, NULL, rcpt);
			struct msgmap *m = NULL;
			int r = 0;
			if (token) {
				if (!first)
					first = loc;
				r = store_msgmap_get(app->store, MSGMAP_BY_TOKEN, loc->id, token, &m);
			}
			store_msgmap_free(m);
			free(token);
			if (r == 1)
				return loc;
		}
	}
	return first;
}

/* One recipient's copy through inbound_handle. A full HighLevel window
 * is waited out here, up to LMTP_WINDOW_WAIT_MS, in slices that notice a
 * stop: the answer is then 451 and Postfix tries again. */
static enum inbound_result
lmtp_handle(struct lmtp_conn *c, struct app *app, const struct location_config *loc, const struct lmtp_msg *msg,
    int64_t received_at)
{
	int64_t until = mono_ms() + LMTP_WINDOW_WAIT_MS, wait_ms = 0;
	enum inbound_result r;

	while ((r = inbound_handle(app, loc, msg->p, msg->len, received_at, &wait_ms)) == INBOUND_WAIT &&
	    mono_ms() + wait_ms <= until) {
		for (int64_t end = mono_ms() + wait_ms; !c->srv->stop && mono_ms() < end;)
			sleep_ms(end - mono_ms() < 200 ? end - mono_ms() : 200);
		if (c->srv->stop)
			break;
	}
	return r;
}

/* A session leaves the list before its descriptor closes, so lmtp_stop
 * never shuts down a number that was reused. */
static void
lmtp_conn_end(struct lmtp_conn *c)
{
	struct lmtp_server *srv = c->srv;

	pthread_mutex_lock(&srv->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->active--;
	close(c->fd);
	pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);
	free(c);
}

static void *
lmtp_session(void *arg)
{
	struct lmtp_conn *c = arg;
	struct app *app = c->srv->app;
	char line[LMTP_MAX_LINE];
	char *from = NULL;
	char *rcpts[LMTP_MAX_RCPTS];
	const struct location_config *locs[LMTP_MAX_RCPTS];
	size_t n_rcpts = 0, len;
	int r;

	thread_name("lmtp");
	reply(c, "220 mailbridge LMTP ready");
	while ((r = conn_line(c, line, sizeof(line), &len)) != -1) {
			if (r == -2) {
			reply(c, "500 5.5.2 line too long");
			continue;
		}
		if (!strncasecmp(line, "LHLO", 4)) {
			reply(c, "250-mailbridge");
			reply(c, "250-8BITMIME");
			reply(c, "250-ENHANCEDSTATUSCODES");
			reply(c, "250 SIZE %d", INBOUND_MAX_MESSAGE);
		} else if (!strncasecmp(line, "MAIL FROM:", 10)) {
			free(from);
			from = path_arg(line + 10);
			reply(c, from ? "250 2.1.0 ok" : "501 5.5.4 bad MAIL FROM");
		} else if (!strncasecmp(line, "RCPT TO:", 8)) {
			char *to = path_arg(line + 8);
			const struct location_config *loc = to ? lmtp_route(app, to) : NULL;
			if (!from) {
				reply(c, "503 5.5.1 MAIL first");
			} else if (!loc) {
				reply(c, "550 5.1.1 <%s>: no location receives this address", to ? to : "");
			} else if (n_rcpts >= LMTP_MAX_RCPTS) {
				reply(c, "452 4.5.3 too many recipients");
			} else {
				rcpts[n_rcpts] = to;
				locs[n_rcpts++] = loc;
				to = NULL;
				reply(c, "250 2.1.5 ok");
			}
			free(to);
		} else if (!strcasecmp(line, "DATA")) {
			struct lmtp_msg msg = { 0 };
			char *rp;
			if (n_rcpts == 0) {
				reply(c, "503 5.5.1 no valid recipients");
				continue;
			}
			reply(c, "354 go ahead");
			/* like a local delivery agent: keep the envelope sender */
			rp = xasprintf("Return-Path: <%s>\r\n", from);
			msg_put(&msg, rp, strlen(rp));
			free(rp);
			if (conn_data(c, &msg) < 0) {
				free(msg.p);
				goto out;
			}
			/* LMTP: one reply per accepted recipient, in order */
			int64_t received_at = now_ms();
			for (size_t i = 0; i < n_rcpts; i++) {
				if (msg.over) {
					reply(c, "552 5.3.4 <%s> message too big", rcpts[i]);
				} else if (lmtp_handle(c, app, locs[i], &msg, received_at) == INBOUND_DONE) {
					reply(c, "250 2.0.0 <%s> recorded", rcpts[i]);
				} else {
					reply(c, "451 4.3.0 <%s> HighLevel unavailable, try again later", rcpts[i]);
				}
				free(rcpts[i]);
			}
			n_rcpts = 0;
			free(from);
			from = NULL;
			free(msg.p);
		} else if (!strcasecmp(line, "RSET")) {
			for (size_t i = 0; i < n_rcpts; i++)
				free(rcpts[i]);
			n_rcpts = 0;
			free(from);
			from = NULL;
			reply(c, "250 2.0.0 ok");
		} else if (!strcasecmp(line, "NOOP")) {
			reply(c, "250 2.0.0 ok");
		} else if (!strcasecmp(line, "QUIT")) {
			reply(c, "221 2.0.0 bye");
			break;
		} else {
			reply(c, "502 5.5.2 command not implemented");
		}
	}
out:
	for (size_t i = 0; i < n_rcpts; i++)
		free(rcpts[i]);
	free(from);
	lmtp_conn_end(c);
	return NULL;
}

/* The peer may speak LMTP: a UNIX socket (its file mode decides), or a
 * TCP peer in lmtp_allow (loopback by default). */
static bool
lmtp_peer_ok(struct lmtp_server *srv, const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (srv->unix_path)
		return true;
	netaddr_to_string((const struct sockaddr *)ss, buf, len);
	return netaddr_list_has_addr(srv->allow, (const struct sockaddr *)ss);
}

static void
lmtp_refuse(int fd, const char *text)
{
	(void)!send(fd, text, strlen(text), MSG_NOSIGNAL);
	close(fd);
}

static void lmtp_free(struct lmtp_server *srv);

static void *
lmtp_accept_loop(void *arg)
{
	struct lmtp_server *srv = arg;

	thread_name("lmtp-accept");
	while (!srv->stop) {
		struct pollfd p = { srv->fd, POLLIN, 0 };
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[INET6_ADDRSTRLEN];
		int fd;
		pthread_t t;
		struct lmtp_conn *c;
		bool full;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(srv->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (!lmtp_peer_ok(srv, &ss, peer, sizeof(peer))) {
			log_warn("lmtp: refused a connection from %s: not in lmtp_allow", peer);
			lmtp_refuse(fd, "554 5.7.1 not allowed\r\n");
			continue;
		}
		c = xcalloc(1, sizeof(*c));
		c->srv = srv;
		c->fd = fd;
		pthread_mutex_lock(&srv->lock);
		full = srv->active >= srv->max_sessions;
		if (!full) {
			srv->active++;
			c->next = srv->conns;
			if (srv->conns)
				srv->conns->prev = c;
			srv->conns = c;
		}
		pthread_mutex_unlock(&srv->lock);
		if (full) {
			log_warn("lmtp: refused a connection: lmtp_max_sessions (%ld) reached", srv->max_sessions);
			lmtp_refuse(fd, "421 4.3.2 too many sessions, try again later\r\n");
			free(c);
			continue;
		}
		if (pthread_create(&t, NULL, lmtp_session, c) != 0) {
			lmtp_conn_end(c);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

/* "unix:/path" or "host:port" (host an IPv4 or [IPv6] address). */
static int
lmtp_listen_socket(const char *listen_on, char **unix_path_r, char **error_r)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int one = 1, fd;

	*unix_path_r = NULL;
	if (!strncmp(listen_on, "unix:", 5)) {
		struct sockaddr_un *su = (struct sockaddr_un *)&ss;
		const char *path = listen_on + 5;
		mode_t old;
		if (!*path || strlen(path) >= sizeof(su->sun_path)) {
			*error_r = xasprintf("lmtp_listen %s: not a usable socket path", listen_on);
			return -1;
		}
		su->sun_family = AF_UNIX;
		strcpy(su->sun_path, path);
		sl = sizeof(*su);
		{
			/* a socket left by an earlier run goes; anything else there
			 * is a mistake in the configuration, never deleted */
			struct stat sb;
			if (lstat(path, &sb) == 0) {
				if (!S_ISSOCK(sb.st_mode)) {
					*error_r = xasprintf("lmtp_listen %s: exists and is not a socket", listen_on);
					return -1;
				}
				unlink(path);
			}
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		old = umask(0117);     /* 0660: the owner and its group (add postfix to it) */
		if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
			umask(old);
			*error_r = xasprintf("lmtp_listen %s: %s", listen_on, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		umask(old);
		*unix_path_r = xstrdup(path);
		return fd;
	} else {
		char *e = NULL;
		if (netaddr_parse_hostport(listen_on, &ss, NULL, &e) < 0) {
			*error_r = xasprintf("lmtp_listen (host:port or unix:/path): %s", e);
			free(e);
			return -1;
		}
		sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0)
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0) {
			*error_r = xasprintf("lmtp_listen %s: %s", listen_on, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		return fd;
	}
}

struct lmtp_server *
lmtp_start(struct app *app, const char *listen_on, char **error_r)
{
	struct lmtp_server *srv;
	char *unix_path = NULL;
	int fd;

	if ((fd = lmtp_listen_socket(listen_on, &unix_path, error_r)) < 0)
		return NULL;
	srv = xcalloc(1, sizeof(*srv));
	srv->app = app;
	srv->fd = fd;
	srv->unix_path = unix_path;
	srv->allow = &app->cfg->lmtp_allow_list;
	srv->max_sessions = app->cfg->lmtp_max_sessions;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	if (pthread_create(&srv->thread, NULL, lmtp_accept_loop, srv) != 0) {
		*error_r = xstrdup("lmtp: cannot start the listener thread");
		lmtp_free(srv);
		return NULL;
	}
	log_info("lmtp: listening on %s", listen_on);
	return srv;
}

static void
lmtp_free(struct lmtp_server *srv)
{
	close(srv->fd);
	if (srv->unix_path)
		unlink(srv->unix_path);
	free(srv->unix_path);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->idle);
	free(srv);
}

/* Stops accepting, ends every session and waits for all of them: a
 * session in DATA may be inside inbound_handle, which uses the store and
 * the configuration the caller frees next. Sessions between commands see
 * EOF at once; one inside inbound_handle finishes that message first
 * (its reply then goes nowhere and Postfix retries). */
void
lmtp_stop(struct lmtp_server *srv)
{
	int64_t next_note;

	if (!srv)
		return;
	srv->stop = 1;
	pthread_join(srv->thread, NULL);
	pthread_mutex_lock(&srv->lock);
	for (struct lmtp_conn *c = srv->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	next_note = mono_ms() + 5000;
	while (srv->active > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&srv->idle, &srv->lock, &ts);
		if (srv->active > 0 && mono_ms() > next_note) {
			log_info("lmtp: waiting for %d session(s) to finish their message", srv->active);
			next_note = mono_ms() + 5000;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	lmtp_free(srv);
}
