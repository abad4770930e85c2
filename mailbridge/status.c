#include "status.h"
#include "app.h"
#include "config.h"
#include "oauth.h"
#include "store_events.h"
#include "store_inbound.h"
#include "store_jobs.h"
#include "util.h"

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STATUS_EVENTS 20

/* text as HTML (element content or a quoted attribute) */
static void
put_escaped(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* Basic credentials' password part, decoded (malloc'd), or NULL. The
 * base64 is GnuTLS's, as sig.c's. */
static char *
basic_password(const char *auth)
{
	gnutls_datum_t in, out = { NULL, 0 };
	char *colon, *pw = NULL;

	if (!auth || strncasecmp(auth, "Basic ", 6))
		return NULL;
	in.data = (unsigned char *)auth + 6;
	in.size = (unsigned)strlen(auth + 6);
	if (gnutls_base64_decode2(&in, &out) < 0)
		return NULL;
	colon = memchr(out.data, ':', out.size);
	if (colon)
		pw = xasprintf("%.*s", (int)(out.size - (size_t)(colon + 1 - (char *)out.data)), colon + 1);
	gnutls_free(out.data);
	return pw;
}

/* The metrics token (Bearer, or Basic's password), or loopback without one. */
static bool
status_allowed(const struct app *app, const struct http_request *req)
{
	const char *auth = http_header(req, "Authorization");
	char peer[64] = "";
	bool ok;

	if (!app->cfg->metrics_token) {
		http_peer(req, peer, sizeof(peer));
		return netaddr_text_is_loopback(peer);
	}
	if (auth && !strncasecmp(auth, "Bearer ", 7)) {
		ok = secret_equal(auth + 7, app->cfg->metrics_token);   /* constant time */
	} else {
		char *pw = basic_password(auth);
		ok = pw && secret_equal(pw, app->cfg->metrics_token);
		free(pw);
	}
	return ok;
}

struct loc_row {
	int open;
	int64_t oldest_at;
	char *error;
	int64_t error_at;
};

struct rows {
	const struct config *cfg;
	struct loc_row *r;         /* one per configured location */
};

static struct loc_row *
row_for(struct rows *rows, const char *location_id)
{
	for (size_t i = 0; location_id && i < rows->cfg->n_locations; i++)
		if (!strcmp(rows->cfg->locations[i].id, location_id))
			return &rows->r[i];
	return NULL;
}

static void
take_open(const char *location_id, int open, int64_t oldest_at, void *arg)
{
	struct loc_row *r = row_for(arg, location_id);
	if (r) {
		r->open = open;
		r->oldest_at = oldest_at;
	}
}

static void
take_error(const char *location_id, const char *error, int64_t at, void *arg)
{
	struct loc_row *r = row_for(arg, location_id);
	if (r && !r->error) {
		r->error = xstrdup(error);
		r->error_at = at;
	}
}

static void
put_event(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg)
{
	FILE *f = arg;
	char when[32];
	iso_time(at, when, sizeof(when));
	fprintf(f, "<tr><td class=\"when\">%s</td><td>", when);
	put_escaped(f, message_id ? message_id : "-");
	fputs("</td><td>", f);
	put_escaped(f, kind);
	fputs("</td><td>", f);
	put_escaped(f, detail);
	fputs("</td></tr>\n", f);
}

static const char *
age_text(int64_t ms, char *buf, size_t len)
{
	int64_t s = ms / 1000;
	if (s < 120)
		snprintf(buf, len, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, len, "%lldm", (long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, len, "%lldh", (long long)(s / 3600));
	else
		snprintf(buf, len, "%lldd", (long long)(s / 86400));
	return buf;
}

static void
put_location(FILE *f, struct app *app, const struct location_config *loc, const struct loc_row *r)
{
	static const char *const health_class[] = { "ok", "warn", "fail" };
	char tok[64], when[32], age[32];
	char *wstate = NULL, *wdetail = NULL;
	int64_t wat = 0;
	enum token_health th = oauth_token_state(app->store, loc, tok, sizeof(tok));

	fputs("<tr id=\"loc-", f);
	put_escaped(f, loc->id);
	fputs("\"><th scope=\"row\">", f);
	put_escaped(f, loc->id);
	fprintf(f, "</th><td class=\"%s\">", health_class[th]);
	put_escaped(f, tok);
	fputs("</td>", f);
	if (!loc->imap.host) {
		fputs("<td class=\"none\">not configured</td>", f);
	} else if (store_watcher_get(app->store, loc->id, &wstate, &wdetail, &wat) == 1) {
		iso_time(wat, when, sizeof(when));
		fprintf(f, "<td class=\"%s\">", !strcmp(wstate, "idling") || !strcmp(wstate, "polling") ? "ok" : "warn");
		put_escaped(f, wstate);
		fprintf(f, " since %s", when);
		if (wdetail) {
			fputs(": ", f);
			put_escaped(f, wdetail);
		}
		fputs("</td>", f);
	} else {
		fputs("<td class=\"warn\">not started yet</td>", f);
	}
	fprintf(f, "<td class=\"num\">%d</td><td>%s</td><td>", r->open,
	    r->open ? age_text(now_ms() - r->oldest_at, age, sizeof(age)) : "-");
	if (r->error) {
		iso_time(r->error_at, when, sizeof(when));
		fprintf(f, "<span class=\"when\">%s</span> ", when);
		put_escaped(f, r->error);
	} else {
		fputs("-", f);
	}
	fputs("</td></tr>\n", f);
	free(wstate);
	free(wdetail);
}

static void
render(FILE *f, struct app *app, struct rows *rows)
{
	char now[32];
	iso_time(now_ms(), now, sizeof(now));
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	    "<meta http-equiv=\"refresh\" content=\"30\">\n<title>mailbridge status</title>\n<style>\n"
	    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\n"
	    "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}\n"
	    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\n"
	    "thead th{background:#eee}.num{text-align:right}.when{color:#666;white-space:nowrap}\n"
	    ".ok{color:#060}.warn{color:#a50;background:#fff4e0}.fail{color:#fff;background:#b00;font-weight:bold}\n"
	    ".none{color:#888}h2{margin-top:1.5em}\n</style></head>\n<body>\n", f);
	fprintf(f, "<h1>mailbridge</h1>\n<p>version %s (commit %s) &middot; %zu location(s) &middot; %s</p>\n",
	    MB_VERSION, MB_COMMIT, app->cfg->n_locations, now);
	fputs("<table id=\"locations\"><thead><tr><th>Location</th><th>Token</th><th>IMAP watcher</th>"
	    "<th>Queue</th><th>Oldest job</th><th>Last error</th></tr></thead><tbody>\n", f);
	for (size_t i = 0; i < app->cfg->n_locations; i++)
		put_location(f, app, &app->cfg->locations[i], &rows->r[i]);
	fputs("</tbody></table>\n", f);
	for (size_t i = 0; i < app->cfg->n_locations; i++) {
		const char *id = app->cfg->locations[i].id;
		fputs("<section id=\"events-", f);
		put_escaped(f, id);
		fputs("\"><h2>", f);
		put_escaped(f, id);
		fprintf(f, ": last %d events</h2>\n<table><thead><tr><th>When</th><th>Message</th><th>Event</th>"
		    "<th>Detail</th></tr></thead><tbody>\n", STATUS_EVENTS);
		if (store_events_recent(app->store, id, STATUS_EVENTS, put_event, f) <= 0)
			fputs("<tr><td colspan=\"4\" class=\"none\">none kept</td></tr>\n", f);
		fputs("</tbody></table></section>\n", f);
	}
	fputs("</body></html>\n", f);
}

void
status_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	struct rows rows = { app->cfg, NULL };
	size_t len = 0;
	FILE *f;

	if (!status_allowed(app, req)) {
		http_json_error(resp, app->cfg->metrics_token ? 401 : 403, app->cfg->metrics_token ?
		    "the status page needs the metrics token" : "the status page answers on loopback only", NULL);
		if (app->cfg->metrics_token)
			resp->www_authenticate = "Basic realm=\"mailbridge\", charset=\"UTF-8\"";
		return;
	}
	rows.r = xcalloc(app->cfg->n_locations + 1, sizeof(*rows.r));
	(void)store_job_open_by_location(app->store, take_open, &rows);
	(void)store_job_last_error_by_location(app->store, take_error, &rows);
	f = open_memstream(&resp->body, &len);
	render(f, app, &rows);
	fclose(f);
	for (size_t i = 0; i < app->cfg->n_locations; i++)
		free(rows.r[i].error);
	free(rows.r);
	resp->status = 200;
	resp->content_type = "text/html; charset=utf-8";
}
