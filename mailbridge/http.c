#include "http.h"
#include "log.h"
#include "netaddr.h"
#include "util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define HTTP_DRAIN_MS 2000
#define HTTP_QUIET_MS 100

/* Connections per peer address. libmicrohttpd's own per-IP limit counts
 * per pool thread, so with 8 threads a peer got 8 times the limit: this
 * one is the server's. A linear table: it holds at most conn_limit
 * addresses. */
struct peer_count {
	unsigned char addr[16];
	unsigned n;
};

struct peer_table {
	pthread_mutex_t lock;
	struct peer_count *p;
	size_t n, cap;
};

struct http_server {
	struct MHD_Daemon *mhd;
	struct peer_table peers;
	const struct http_route *routes;
	size_t n_routes;
	void *ctx;
	struct http_limits lim;
	_Atomic size_t buffered;   /* bytes of bodies held right now */
	int port;
	bool quiesced;             /* the listener was handed over */
};

struct http_conn_state {
	const struct http_route *route;
	char *body;
	size_t len, cap, max;
	int64_t deadline;          /* mono_ms() by which the request must be in */
	int64_t started_us;        /* mono_us() at its headers */
	int error_status;          /* set while the body is still arriving */
	const char *error_msg;
};

static enum MHD_Result
http_send(struct MHD_Connection *c, struct http_response *resp)
{
	const char *body = resp->body ? resp->body : "";
	struct MHD_Response *r = MHD_create_response_from_buffer(resp->body_len ? resp->body_len : strlen(body),
	    (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	    resp->content_type ? resp->content_type : "application/json");
	if (resp->location)
		MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, resp->location);
	if (resp->set_cookie)
		MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, resp->set_cookie);
	if (resp->www_authenticate)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, resp->www_authenticate);
	if (resp->no_store)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store, private");
	ret = MHD_queue_response(c, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	free(resp->body);
	free(resp->location);
	free(resp->set_cookie);
	return ret;
}

void
http_json_error(struct http_response *resp, int status, const char *msg, const char *field)
{
	json_t *o = json_pack("{s:s}", "error", msg);
	if (field)
		json_object_set_new(o, "field", json_string(field));
	free(resp->body);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
}

void
http_text(struct http_response *resp, int status, const char *content_type, const char *text)
{
	free(resp->body);
	resp->status = status;
	resp->content_type = content_type;
	resp->body = xstrdup(text);
}

static enum MHD_Result
http_simple(struct MHD_Connection *c, int status, const char *msg)
{
	struct http_response resp = { 0 };
	http_json_error(&resp, status, msg, NULL);
	return http_send(c, &resp);
}

/* The route for url and method; *known_r when the path exists at all. */
static const struct http_route *
http_route_for(const struct http_server *srv, const char *url, const char *method, bool *known_r)
{
	const struct http_route *route = NULL;

	*known_r = false;
	for (size_t i = 0; i < srv->n_routes; i++) {
		const char *rp = srv->routes[i].path;
		size_t rl = strlen(rp);
		/* a route ending in a star matches everything below its prefix */
		bool match = rl > 0 && rp[rl - 1] == '*' ? strncmp(rp, url, rl - 1) == 0 : strcmp(rp, url) == 0;
		if (match) {
			*known_r = true;
			if (strcmp(srv->routes[i].method, method) == 0 || strcmp(srv->routes[i].method, "*") == 0)
				route = &srv->routes[i];
		}
	}
	return route;
}

static void
http_body_fail(struct http_conn_state *cs, int status, const char *msg)
{
	if (cs->error_status == 0) {
		cs->error_status = status;
		cs->error_msg = msg;
	}
}

/* Takes one piece of the body, within the route's cap, the request's
 * deadline and the server's budget for all bodies at once. */
static void
http_body_take(struct http_server *srv, struct http_conn_state *cs, const char *data, size_t n)
{
	if (cs->error_status)
		return;
	if (mono_ms() > cs->deadline)
		return http_body_fail(cs, 408, "request took too long");
	/* chunked bodies carry no Content-Length: enforce the cap here too */
	if (cs->len + n > cs->max)
		return http_body_fail(cs, 413, "body too large");
	if (cs->len + n + 1 > cs->cap) {
		size_t cap = (cs->len + n + 1) * 2;
		if (cap > cs->max + 1)
			cap = cs->max + 1;
		if (atomic_fetch_add(&srv->buffered, cap - cs->cap) + (cap - cs->cap) > srv->lim.max_buffered) {
			atomic_fetch_sub(&srv->buffered, cap - cs->cap);
			return http_body_fail(cs, 503, "too many requests being received; try again");
		}
		cs->body = xrealloc(cs->body, cap);
		cs->cap = cap;
	}
	memcpy(cs->body + cs->len, data, n);
	cs->len += n;
}

static enum MHD_Result
http_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_conn_state *cs = *con_cls;

	if (!cs) {
		bool path_known;
		const struct http_route *route = http_route_for(srv, url, method, &path_known);
		size_t max;
		const char *cl;

		if (!route)
			return http_simple(c, path_known ? 405 : 404,
			    path_known ? "method not allowed" : "not found");
		max = route->large_body ? srv->lim.max_body : srv->lim.small_body;
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > max)
			return http_simple(c, 413, "body too large");
		if (route->precheck) {
			struct http_request req = { c, method, url, "", 0, mono_us() };
			struct http_response resp = { 0 };
			if (!route->precheck(srv->ctx, &req, &resp))
				return http_send(c, &resp);
		}
		cs = xcalloc(1, sizeof(*cs));
		cs->route = route;
		cs->max = max;
		cs->deadline = mono_ms() + (int64_t)srv->lim.request_timeout * 1000;
		cs->started_us = mono_us();
		*con_cls = cs;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		http_body_take(srv, cs, upload_data, *upload_data_size);
		*upload_data_size = 0;
		/* a trickled body or a full budget: drop the connection now
		 * rather than wait for the rest (413 waits: nothing is kept) */
		if (cs->error_status == 408 || cs->error_status == 503) {
			/* the route, not the URL: a Delivery URL carries a secret */
			log_info("http: %s %s dropped: %s", method, cs->route->path, cs->error_msg);
			return MHD_NO;
		}
		return MHD_YES;
	}
	if (cs->error_status)
		return http_simple(c, cs->error_status, cs->error_msg);

	{
		struct http_request req = { c, method, url, cs->body ? cs->body : "", cs->len, cs->started_us };
		struct http_response resp = { 0 };
		if (cs->body)
			cs->body[cs->len] = '\0';
		resp.status = 500;
		cs->route->fn(srv->ctx, &req, &resp);
		return http_send(c, &resp);
	}
}

static void
http_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct http_conn_state *cs = *con_cls;
	if (cs) {
		atomic_fetch_sub(&srv->buffered, cs->cap);
		free(cs->body);
		free(cs);
		*con_cls = NULL;
	}
}

static struct peer_count *
peer_find(struct peer_table *t, const unsigned char key[16])
{
	for (size_t i = 0; i < t->n; i++)
		if (!memcmp(t->p[i].addr, key, 16))
			return &t->p[i];
	return NULL;
}

static enum MHD_Result
http_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct http_server *srv = cls;
	unsigned char key[16];
	struct peer_count *pc;
	bool ok;

	(void)addrlen;
	if (srv->lim.per_ip_limit == 0 || !netaddr_key16(addr, key))
		return MHD_YES;
	pthread_mutex_lock(&srv->peers.lock);
	pc = peer_find(&srv->peers, key);
	ok = !pc || pc->n < srv->lim.per_ip_limit;
	pthread_mutex_unlock(&srv->peers.lock);
	if (!ok)
		log_debug("http: refused a connection: connections_per_ip (%u) reached", srv->lim.per_ip_limit);
	return ok ? MHD_YES : MHD_NO;
}

static void
http_notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct http_server *srv = cls;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	unsigned char key[16];
	struct peer_count *pc;

	(void)socket_context;
	if (srv->lim.per_ip_limit == 0 || !ci || !netaddr_key16(ci->client_addr, key))
		return;
	pthread_mutex_lock(&srv->peers.lock);
	pc = peer_find(&srv->peers, key);
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		if (!pc) {
			if (srv->peers.n == srv->peers.cap) {
				srv->peers.cap = srv->peers.cap ? srv->peers.cap * 2 : 16;
				srv->peers.p = xrealloc(srv->peers.p, srv->peers.cap * sizeof(*srv->peers.p));
			}
			pc = &srv->peers.p[srv->peers.n++];
			memcpy(pc->addr, key, 16);
			pc->n = 0;
		}
		pc->n++;
	} else if (pc && --pc->n == 0) {
		*pc = srv->peers.p[--srv->peers.n];    /* the last takes its place */
	}
	pthread_mutex_unlock(&srv->peers.lock);
}

static void
http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	log_debug("http: %s", buf);
}

struct http_server *
http_start(const char *host, int port, int listen_fd, const struct http_route *routes, size_t n_routes,
    void *ctx, const struct http_limits *lim, char **error_r)
{
	struct http_server *srv = xcalloc(1, sizeof(*srv));
	struct sockaddr_storage ss = { 0 };
	unsigned v6 = 0;
	const union MHD_DaemonInfo *info;

	/* "127.0.0.1", "localhost", "::1" or "[::1]" */
	if (netaddr_parse_host(host, port, &ss) < 0) {
		*error_r = xasprintf("listen address %s is not an IPv4 or IPv6 address", host);
		free(srv);
		return NULL;
	}
	if (ss.ss_family == AF_INET6)
		v6 = MHD_USE_IPv6;
	srv->routes = routes;
	srv->n_routes = n_routes;
	srv->ctx = ctx;
	srv->lim = *lim;
	pthread_mutex_init(&srv->peers.lock, NULL);
	/* the same options either way; only how the socket comes differs */
#define HTTP_OPTIONS \
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, NULL, \
	    MHD_OPTION_THREAD_POOL_SIZE, lim->threads, \
	    MHD_OPTION_CONNECTION_LIMIT, lim->conn_limit, \
	    MHD_OPTION_CONNECTION_TIMEOUT, lim->conn_timeout, \
	    MHD_OPTION_NOTIFY_CONNECTION, http_notify_connection, srv, \
	    MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv, \
	    MHD_OPTION_END
	if (listen_fd >= 0)
		srv->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
		    MHD_USE_ERROR_LOG | v6, 0, http_accept_policy, srv, http_access, srv,
		    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd, HTTP_OPTIONS);
	else
		srv->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
		    MHD_USE_ERROR_LOG | v6, (uint16_t)port, http_accept_policy, srv, http_access, srv,
		    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, HTTP_OPTIONS);
#undef HTTP_OPTIONS
	if (!srv->mhd) {
		*error_r = xasprintf("cannot listen on %s:%d", host, port);
		pthread_mutex_destroy(&srv->peers.lock);
		free(srv);
		return NULL;
	}
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : port;
	return srv;
}

int
http_port(const struct http_server *srv)
{
	return srv->port;
}

int
http_release_listener(struct http_server *srv)
{
	MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
	int flags;

	if (fd == MHD_INVALID_SOCKET)
		return -1;
	srv->quiesced = true;
	flags = fcntl(fd, F_GETFD);
	fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
	return fd;
}

void
http_stop(struct http_server *srv)
{
	int64_t until, idle_since = -1;

	if (!srv)
		return;
	if (!srv->quiesced)
		MHD_quiesce_daemon(srv->mhd);
	/* let requests already being handled finish (their ack may be the
	 * only thing telling HighLevel the message is safe). A pool thread
	 * woken for the listening socket just before the quiesce can still
	 * accept one connection after it: only a quiet spell of
	 * HTTP_QUIET_MS, not one empty look, means none is left (a reload
	 * once closed such a connection unanswered) */
	until = mono_ms() + HTTP_DRAIN_MS;
	while (mono_ms() < until) {
		const union MHD_DaemonInfo *i = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		if (!i)
			break;
		if (i->num_connections > 0)
			idle_since = -1;
		else if (idle_since < 0)
			idle_since = mono_ms();
		else if (mono_ms() - idle_since >= HTTP_QUIET_MS)
			break;
		usleep(10000);
	}
	MHD_stop_daemon(srv->mhd);
	pthread_mutex_destroy(&srv->peers.lock);
	free(srv->peers.p);
	free(srv);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_cookie(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, name);
}

const char *
http_query(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const struct sockaddr *
http_peer(const struct http_request *req, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	netaddr_to_string(sa, buf, len);
	return sa;
}
