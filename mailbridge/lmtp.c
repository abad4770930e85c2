#include "lmtp.h"
#include "app.h"
#include "config.h"
#include "inbound.h"
#include "log.h"
#include "store.h"
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
#include <unistd.h>

#define LMTP_MAX_LINE     2048
#define LMTP_MAX_RCPTS    100
#define LMTP_TIMEOUT_MS   (5 * 60 * 1000)

struct lmtp_server {
	struct app *app;
	int fd;
	pthread_t thread;
	volatile int stop;
	pthread_mutex_t lock;
	int active;                /* connection threads still running */
};

struct lmtp_conn {
	struct lmtp_server *srv;
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

/* One line without CRLF into line; -1 on EOF/timeout, -2 when too long. */
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
	if (strncasecmp(rcpt, "reply+", 6) && strncasecmp(rcpt, "bounce+", 7))
		return NULL;
	for (size_t i = 0; i < cfg->n_locations; i++) {
		const struct location_config *loc = &cfg->locations[i];
		const char *plus = strchr(rcpt, '+');
		char *token;
		struct msgmap *m = NULL;
		if (!loc->reply_domain || strcasecmp(at + 1, loc->reply_domain))
			continue;
		if (!first)
			first = loc;
		token = strndup(plus + 1, (size_t)(at - plus - 1));
		for (char *p = token; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		if (store_msgmap_get(app->store, "token", loc->id, token, &m) == 1) {
			msgmap_free(m);
			free(token);
			return loc;
		}
		free(token);
	}
	return first;
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
			struct { char *p; size_t len, cap; bool over; } msg = { 0 };
			char *rp;
			if (n_rcpts == 0) {
				reply(c, "503 5.5.1 no valid recipients");
				continue;
			}
			reply(c, "354 go ahead");
			/* like a local delivery agent: keep the envelope sender */
			rp = xasprintf("Return-Path: <%s>\r\n", from);
			msg.cap = strlen(rp) + 65536;
			msg.p = xmalloc(msg.cap);
			msg.len = strlen(rp);
			memcpy(msg.p, rp, msg.len);
			free(rp);
			for (;;) {
				r = conn_line(c, line, sizeof(line), &len);
				if (r == -1)
					goto out;
				if (len == 1 && line[0] == '.')
					break;
				{
					const char *l = line[0] == '.' ? line + 1 : line;   /* dot-unstuffing */
					size_t ll = line[0] == '.' ? len - 1 : len;
					if (msg.len + ll + 2 > INBOUND_MAX_MESSAGE) {
						msg.over = true;
						continue;
					}
					if (msg.len + ll + 3 > msg.cap) {
						msg.cap = (msg.len + ll + 3) * 2;
						msg.p = xrealloc(msg.p, msg.cap);
					}
					memcpy(msg.p + msg.len, l, ll);
					msg.len += ll;
					msg.p[msg.len++] = '\r';
					msg.p[msg.len++] = '\n';
				}
			}
			/* LMTP: one reply per accepted recipient, in order */
			for (size_t i = 0; i < n_rcpts; i++) {
				if (msg.over) {
					reply(c, "552 5.3.4 <%s> message too big", rcpts[i]);
				} else if (inbound_handle(app, locs[i], msg.p, msg.len) == INBOUND_DONE) {
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
	close(c->fd);
	pthread_mutex_lock(&c->srv->lock);
	c->srv->active--;
	pthread_mutex_unlock(&c->srv->lock);
	free(c);
	return NULL;
}

static void *
lmtp_accept_loop(void *arg)
{
	struct lmtp_server *srv = arg;
	while (!srv->stop) {
		struct pollfd p = { srv->fd, POLLIN, 0 };
		int fd;
		pthread_t t;
		struct lmtp_conn *c;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		c = xcalloc(1, sizeof(*c));
		c->srv = srv;
		c->fd = fd;
		pthread_mutex_lock(&srv->lock);
		srv->active++;
		pthread_mutex_unlock(&srv->lock);
		if (pthread_create(&t, NULL, lmtp_session, c) != 0) {
			close(fd);
			free(c);
			pthread_mutex_lock(&srv->lock);
			srv->active--;
			pthread_mutex_unlock(&srv->lock);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

struct lmtp_server *
lmtp_start(struct app *app, const char *listen_on, char **error_r)
{
	struct lmtp_server *srv;
	struct sockaddr_in sa = { 0 };
	const char *colon = strrchr(listen_on, ':');
	char *host;
	int one = 1, fd;

	if (!colon) {
		*error_r = xasprintf("lmtp_listen must be host:port (got %s)", listen_on);
		return NULL;
	}
	host = strndup(listen_on, (size_t)(colon - listen_on));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &sa.sin_addr) != 1) {
		*error_r = xasprintf("lmtp_listen: %s is not an IPv4 address", host);
		free(host);
		return NULL;
	}
	free(host);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		*error_r = xasprintf("lmtp_listen %s: %s", listen_on, strerror(errno));
		close(fd);
		return NULL;
	}
	srv = xcalloc(1, sizeof(*srv));
	srv->app = app;
	srv->fd = fd;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_create(&srv->thread, NULL, lmtp_accept_loop, srv);
	log_info("lmtp: listening on %s", listen_on);
	return srv;
}

void
lmtp_stop(struct lmtp_server *srv)
{
	int64_t until;
	if (!srv)
		return;
	srv->stop = 1;
	pthread_join(srv->thread, NULL);
	close(srv->fd);
	/* sessions in a DATA exchange finish; idle ones time out or see EOF */
	until = mono_ms() + 5000;
	for (;;) {
		int active;
		pthread_mutex_lock(&srv->lock);
		active = srv->active;
		pthread_mutex_unlock(&srv->lock);
		if (active == 0 || mono_ms() > until)
			break;
		usleep(10000);
	}
	free(srv);
}
