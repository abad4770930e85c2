/* http: the libmicrohttpd server and its route table. Bodies are read
 * whole (bounded per route: 413 past it) before a handler runs; a
 * handler fills a response and never blocks on the network.
 *
 * Denial of service bounds: connections per peer address, one deadline
 * for a whole request (a body trickled in slowly gets 408), all bodies
 * being buffered at once under one budget (503 past it), and a route's
 * precheck runs on the headers before any of the body is buffered. */
#ifndef MB_HTTP_H
#define MB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;
struct sockaddr;

struct http_request {
	struct MHD_Connection *conn;
	const char *method;
	const char *path;
	const char *body;          /* NUL-terminated copy; body_len excludes the NUL */
	size_t body_len;
	int64_t started_us;        /* mono_us() when its headers were in (latency metrics) */
};

struct http_response {
	int status;
	const char *content_type;  /* static string */
	char *body;                /* malloc'd, owned by the server after return */
	size_t body_len;           /* 0: strlen(body); else its length (binary bodies) */
	bool no_store;             /* Cache-Control: no-store, private */
	char *location;            /* malloc'd redirect target or NULL */
	char *set_cookie;          /* malloc'd Set-Cookie value or NULL */
	const char *www_authenticate;  /* static WWW-Authenticate value (a 401) or NULL */
};

typedef void (*http_handler_fn)(void *ctx, const struct http_request *req, struct http_response *resp);
/* Runs once the headers are in (req->body is empty): false refuses the
 * request with resp before its body is read. */
typedef bool (*http_precheck_fn)(void *ctx, const struct http_request *req, struct http_response *resp);

struct http_route {
	const char *method;        /* or "*" for any */
	const char *path;          /* exact match, or a prefix ending in '*' */
	http_handler_fn fn;
	bool large_body;           /* may take limits.max_body; others small_body */
	http_precheck_fn precheck; /* or NULL */
};

struct http_limits {
	size_t max_body;           /* routes marked large_body (the Delivery URL) */
	size_t small_body;         /* every other route */
	size_t max_buffered;       /* all bodies being received at once */
	unsigned conn_limit;
	unsigned per_ip_limit;     /* 0: no limit */
	unsigned conn_timeout;     /* seconds of inactivity */
	unsigned request_timeout;  /* seconds for a whole request, body included */
	unsigned threads;
};

struct http_server;

/* Routes must outlive the server. listen_fd >= 0 adopts an already
 * listening socket (inherited across a reload) instead of binding.
 * Returns NULL with *error_r set. */
struct http_server *http_start(const char *host, int port, int listen_fd, const struct http_route *routes,
    size_t n_routes, void *ctx, const struct http_limits *limits, char **error_r);
/* Stops accepting and hands over the listening socket (now without
 * close-on-exec): connections queue in its backlog until the next process
 * adopts it. Call http_stop afterwards to drain. -1 on failure. */
int http_release_listener(struct http_server *srv);
/* Stops accepting, lets in-flight requests finish (bounded), then stops. */
void http_stop(struct http_server *srv);
/* The port actually bound (useful with port 0). */
int http_port(const struct http_server *srv);

const char *http_header(const struct http_request *req, const char *name);
const char *http_query(const struct http_request *req, const char *name);
const char *http_cookie(const struct http_request *req, const char *name);
/* The peer's address (NULL when unknown); its text form into buf. */
const struct sockaddr *http_peer(const struct http_request *req, char *buf, size_t len);

/* Fills resp with a JSON body {"error": msg, "field": field?}. */
void http_json_error(struct http_response *resp, int status, const char *msg, const char *field);
void http_text(struct http_response *resp, int status, const char *content_type, const char *text);

#endif
