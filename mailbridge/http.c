#include "http.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#define HTTP_DRAIN_MS 2000
#define HTTP_QUIET_MS 100

struct http_server {
	struct MHD_Daemon *mhd;
	const struct http_route *routes;
	size_t n_routes;
	void *ctx;
	size_t max_body;
	int port;
	bool quiesced;             /* the listener was handed over */
};

struct http_conn_state {
	const struct http_route *route;
	char *body;
	size_t len, cap;
	int error_status;          /* set while the body is still arriving */
};

static enum MHD_Result
http_send(struct MHD_Connection *c, struct http_response *resp)
{
	const char *body = resp->body ? resp->body : "";
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
	    MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	    resp->content_type ? resp->content_type : "application/json");
	if (resp->location)
		MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, resp->location);
	ret = MHD_queue_response(c, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	free(resp->body);
	free(resp->location);
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

static enum MHD_Result
http_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_conn_state *cs = *con_cls;

	if (!cs) {
		const struct http_route *route = NULL;
		bool path_known = false;
		const char *cl;

		for (size_t i = 0; i < srv->n_routes; i++) {
			const char *rp = srv->routes[i].path;
			size_t rl = strlen(rp);
			/* a route ending in a star matches everything below its prefix */
			bool match = rl > 0 && rp[rl - 1] == '*' ? strncmp(rp, url, rl - 1) == 0 : strcmp(rp, url) == 0;
			if (match) {
				path_known = true;
				if (strcmp(srv->routes[i].method, method) == 0 || strcmp(srv->routes[i].method, "*") == 0)
					route = &srv->routes[i];
			}
		}
		if (!route)
			return http_simple(c, path_known ? 405 : 404,
			    path_known ? "method not allowed" : "not found");
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > srv->max_body)
			return http_simple(c, 413, "body too large");
		cs = xcalloc(1, sizeof(*cs));
		cs->route = route;
		*con_cls = cs;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* chunked bodies carry no Content-Length: enforce the cap here too */
		if (cs->error_status == 0 && cs->len + *upload_data_size > srv->max_body)
			cs->error_status = 413;
		if (cs->error_status == 0) {
			if (cs->len + *upload_data_size + 1 > cs->cap) {
				cs->cap = (cs->len + *upload_data_size + 1) * 2;
				if (cs->cap > srv->max_body + 1)
					cs->cap = srv->max_body + 1;
				cs->body = xrealloc(cs->body, cs->cap);
			}
			memcpy(cs->body + cs->len, upload_data, *upload_data_size);
			cs->len += *upload_data_size;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (cs->error_status)
		return http_simple(c, cs->error_status, "body too large");

	{
		struct http_request req = { c, method, url, cs->body ? cs->body : "", cs->len };
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
	struct http_conn_state *cs = *con_cls;
	if (cs) {
		free(cs->body);
		free(cs);
		*con_cls = NULL;
	}
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
	struct sockaddr_in sa = { 0 };
	const union MHD_DaemonInfo *info;

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
		*error_r = xasprintf("listen address %s is not an IPv4 address", host);
		free(srv);
		return NULL;
	}
	srv->routes = routes;
	srv->n_routes = n_routes;
	srv->ctx = ctx;
	srv->max_body = lim->max_body;
	/* the same options either way; only how the socket comes differs */
#define HTTP_OPTIONS \
	    MHD_OPTION_THREAD_POOL_SIZE, lim->threads, \
	    MHD_OPTION_CONNECTION_LIMIT, lim->conn_limit, \
	    MHD_OPTION_CONNECTION_TIMEOUT, lim->conn_timeout, \
	    MHD_OPTION_NOTIFY_COMPLETED, http_completed, NULL, \
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, NULL, \
	    MHD_OPTION_END
	if (listen_fd >= 0)
		srv->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
		    MHD_USE_ERROR_LOG, 0, NULL, NULL, http_access, srv,
		    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd, HTTP_OPTIONS);
	else
		srv->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
		    MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, http_access, srv,
		    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, HTTP_OPTIONS);
#undef HTTP_OPTIONS
	if (!srv->mhd) {
		*error_r = xasprintf("cannot listen on %s:%d", host, port);
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
	free(srv);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
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

	snprintf(buf, len, "?");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
	return sa;
}
