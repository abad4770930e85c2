#include "webhook.h"
#include "app.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "outbound.h"
#include "payload.h"
#include "plugin_host.h"
#include "sig.h"
#include "store.h"
#include "store_jobs.h"
#include "store_kv.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The path as the log may show it: a Delivery URL's token segment is a
 * secret. */
static const char *
log_path(const struct http_request *req)
{
	return strncmp(req->path, "/webhooks/provider/", 19) ? req->path : "/webhooks/provider/<token>";
}

/* Returns true when the request may proceed; otherwise resp is filled.
 * always: a signature is required whatever require_signature says (app
 * webhooks). */
static bool
webhook_verify(struct app *app, const struct http_request *req, bool always, struct http_response *resp)
{
	enum sig_result r = sig_verify(app->keys, http_header(req, "X-GHL-Signature"),
	    http_header(req, "X-WH-Signature"), req->body, req->body_len);

	if (r == SIG_OK)
		return true;
	if (r == SIG_ABSENT && !app->cfg->require_signature && !always)
		return true;
	metrics_inc(M_WEBHOOK_BAD_SIGNATURE);
	log_warn("webhook: rejected path=%s reason=\"%s\"", log_path(req),
	    r == SIG_ABSENT ? "signature required" : sig_result_str(r));
	http_json_error(resp, 401, r == SIG_ABSENT ? "signature required" : sig_result_str(r), NULL);
	return false;
}

/* [highlevel] delivery_token: the Delivery URL carries a secret of ours,
 * as its last path segment (/webhooks/provider/<token>) or ?token=. A
 * signature proves HighLevel made a body, not that it was meant for us. */
static bool
webhook_delivery_token_ok(struct app *app, const struct http_request *req, struct http_response *resp)
{
	static const char base[] = "/webhooks/provider";
	const char *want = app->cfg->delivery_token;
	const char *seg = req->path[sizeof(base) - 1] == '/' ? req->path + sizeof(base) : NULL;
	const char *given = seg ? seg : http_query(req, "token");

	if (!want || !want[0]) {
		if (!seg)
			return true;
		http_json_error(resp, 404, "not found", NULL);
		return false;
	}
	if (secret_equal(given, want))
		return true;
	metrics_inc(M_WEBHOOK_BAD_SIGNATURE);
	log_warn("webhook: rejected reason=\"%s delivery URL token\"", given ? "wrong" : "no");
	http_json_error(resp, 401, "delivery URL token required", NULL);
	return false;
}

/* Before the body: the Delivery URL's token, and a signature header at
 * all when one is required (an unsigned 4 MiB body is never buffered). */
static bool
webhook_signature_present(struct app *app, const struct http_request *req, bool always, struct http_response *resp)
{
	if ((!always && !app->cfg->require_signature) || http_header(req, "X-GHL-Signature") ||
	    http_header(req, "X-WH-Signature"))
		return true;
	metrics_inc(M_WEBHOOK_BAD_SIGNATURE);
	log_warn("webhook: rejected path=%s reason=\"signature required\"", log_path(req));
	http_json_error(resp, 401, "signature required", NULL);
	return false;
}

bool
webhook_provider_precheck(void *ctx, const struct http_request *req, struct http_response *resp)
{
	return webhook_delivery_token_ok(ctx, req, resp) && webhook_signature_present(ctx, req, false, resp);
}

bool
webhook_app_precheck(void *ctx, const struct http_request *req, struct http_response *resp)
{
	return webhook_signature_present(ctx, req, true, resp);
}

void
webhook_provider(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	const char *error, *field;
	struct payload *p;
	const struct location_config *loc;
	char *mid, *lid, *type, *emid;
	int r;

	if (!webhook_delivery_token_ok(app, req, resp) || !webhook_verify(app, req, false, resp))
		return;
	p = payload_parse(req->body, req->body_len, &error, &field);
	if (!p) {
		metrics_inc(M_WEBHOOK_INVALID);
		log_warn("webhook: rejected reason=\"%s\" field=%s", error, field ? field : "-");
		http_json_error(resp, 400, error, field);
		return;
	}
	loc = config_location(app->cfg, p->location_id);
	if (!loc) {
		metrics_inc(M_WEBHOOK_UNKNOWN_LOCATION);
		log_warn("webhook: rejected locationId=%s reason=\"location not configured\"", p->location_id);
		http_json_error(resp, 404, "location not configured", "locationId");
		payload_free(p);
		return;
	}
	if (p->kind != PAYLOAD_EMAIL && !plugin_host_for(app->plugins, loc, MB_TYPE_SMS)) {
		metrics_inc(M_WEBHOOK_UNSUPPORTED_TYPE);
		log_warn("webhook: rejected locationId=%s messageId=%s reason=\"no %s provider\"",
		    p->location_id, p->message_id, p->type);
		http_json_error(resp, 422, "no provider for this message type at this location", "type");
		payload_free(p);
		return;
	}
	/* what the answer needs, copied: from here on p may be a sender's */
	mid = xstrdup(p->message_id);
	lid = xstrdup(p->location_id);
	type = xstrdup(p->type);
	emid = xstrdup(p->email_message_id);
	/* handed over before the commit, for a sender that claims the job
	 * as soon as it is committed (outbound.h) */
	if (outbound_keep_parsed(app->outbound, req->body, req->body_len, p))
		p = NULL;
	/* the raw body is what we store: it verified, and it validated */
	r = store_job_add(app->store, mid, lid, type, emid, req->body);
	if (r != 1 && !p)
		outbound_forget_parsed(app->outbound, mid, req->body, req->body_len);
	if (r < 0) {
		/* 503, not 500: HighLevel does not retry either, but the error
		 * says it was us, and nothing was acknowledged */
		metrics_inc(M_WEBHOOK_STORE_ERROR);
		http_json_error(resp, 503, "store unavailable", NULL);
	} else {
		json_t *o = json_pack("{s:s, s:s}", "status", r == 1 ? "accepted" : "duplicate", "messageId", mid);
		resp->status = 200;
		resp->content_type = "application/json";
		resp->body = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		log_info("webhook: %s locationId=%s messageId=%s type=%s", r == 1 ? "accepted" : "duplicate",
		    lid, mid, type);
		metrics_inc(r == 1 ? M_WEBHOOK_ACCEPTED : M_WEBHOOK_DUPLICATE);
		/* the ack's latency: headers in to durable (the commit's fsync included) */
		metrics_observe(H_WEBHOOK_ACK, mono_us() - req->started_us);
		if (r == 1 && app->outbound)
			outbound_wake(app->outbound);
	}
	payload_free(p);
	free(mid);
	free(lid);
	free(type);
	free(emid);
}

void
webhook_health(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	if (store_ping(app->store) == 1)
		http_text(resp, 200, "application/json", "{\"status\":\"ok\",\"version\":\"" MB_VERSION "\"}");
	else
		http_text(resp, 503, "application/json", "{\"status\":\"store unavailable\"}");
}

/* Marketplace webhooks carry timestamp + webhookId (HighLevel's
 * WebhookAuthentication doc: reject outside a window, drop duplicate
 * ids); UNINSTALL samples carry neither, so those dedupe on the body. */
#define WEBHOOK_REPLAY_WINDOW_MS (5 * 60 * 1000)

/* ISO 8601 with its offset: "2025-06-25T06:57:06.225Z",
 * "...06:57:06+02:00", "...06:57:06-0130". ms since the epoch, or -1
 * for anything else (trailing text included). */
int64_t
webhook_parse_timestamp(const char *s)
{
	struct tm tm = { 0 };
	const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	int64_t ms = 0, off = 0;

	if (!p)
		return -1;
	if (*p == '.') {
		int digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*p - '0');
		if (digits == 0)
			return -1;
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, hh, mm;
		if (p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
			return -1;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		p += 3;
		if (*p == ':')
			p++;
		if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
			return -1;
		mm = (p[0] - '0') * 10 + (p[1] - '0');
		p += 2;
		if (hh > 23 || mm > 59)
			return -1;
		off = sign * (hh * 60 + mm) * 60000LL;
	} else {
		return -1;          /* no offset: the time is not known */
	}
	if (*p)
		return -1;
	return (int64_t)timegm(&tm) * 1000 + ms - off;
}

/* The dedupe key of an app webhook: its webhookId, else a hash of the
 * body. malloc'd. */
static char *
app_event_key(const char *wid, const char *body, size_t len)
{
	unsigned char d[32];
	char hex[65];

	if (wid)
		return xasprintf("id:%s", wid);
	gnutls_hash_fast(GNUTLS_DIG_SHA256, body, len, d);
	hex_encode(d, 32, hex);
	return xasprintf("body:%s", hex);
}

void
webhook_app(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	json_error_t jerr;
	json_t *root, *tsv;
	const char *type, *loc, *company, *wid, *app_id;
	char *key = NULL;
	int64_t ts = 0;
	int r = 0;

	if (!webhook_verify(app, req, true, resp))
		return;
	root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		json_decref(root);
		http_json_error(resp, 400, "malformed JSON", NULL);
		return;
	}
	type = json_string_value(json_object_get(root, "type"));
	loc = json_string_value(json_object_get(root, "locationId"));
	company = json_string_value(json_object_get(root, "companyId"));
	tsv = json_object_get(root, "timestamp");
	wid = json_string_value(json_object_get(root, "webhookId"));
	app_id = json_string_value(json_object_get(root, "appId"));
	if (tsv && (!json_is_string(tsv) || (ts = webhook_parse_timestamp(json_string_value(tsv))) < 0)) {
		http_json_error(resp, 400, "timestamp must be an ISO 8601 time with its offset", "timestamp");
	} else if (!type) {
		http_json_error(resp, 400, "missing required field", "type");
	} else if (tsv && llabs(now_ms() - ts) > WEBHOOK_REPLAY_WINDOW_MS) {
		log_warn("webhook: app event %s rejected: timestamp %s outside the replay window", type,
		    json_string_value(tsv));
		http_json_error(resp, 400, "timestamp outside the accepted window", "timestamp");
	} else if (json_object_get(root, "webhookId") && !wid) {
		http_json_error(resp, 400, "webhookId must be a string", "webhookId");
	} else if (strcmp(type, "INSTALL") && strcmp(type, "UNINSTALL")) {
		/* other app events are not ours to act on; acknowledge them */
		http_text(resp, 200, "application/json", "{\"status\":\"ignored\"}");
	} else if (!app->cfg->app_id) {
		log_warn("webhook: app event %s refused: [highlevel] app_id is not set", type);
		http_json_error(resp, 503, "app_id is not configured", NULL);
	} else if (!app_id || strcmp(app_id, app->cfg->app_id)) {
		log_warn("webhook: app event %s refused: appId %s is not ours", type, app_id ? app_id : "(none)");
		http_json_error(resp, 403, "appId does not match this app", "appId");
	} else if ((r = store_webhook_seen(app->store, (key = app_event_key(wid, req->body, req->body_len)),
	    now_ms())) == 0) {
		http_text(resp, 200, "application/json", "{\"status\":\"duplicate\"}");
	} else if (r < 0) {
		http_json_error(resp, 503, "store unavailable", NULL);
	} else if (!app->oauth) {
		http_json_error(resp, 503, "OAuth is not configured", NULL);
	} else if (!loc && !company) {
		http_json_error(resp, 400, "missing required field", "locationId");
	} else {
		r = !strcmp(type, "INSTALL") ? oauth_on_install(app->oauth, company, loc) :
		    oauth_on_uninstall(app->oauth, company, loc);
		if (r < 0)
			http_json_error(resp, 503, "store unavailable", NULL);
		else
			http_text(resp, 200, "application/json", "{\"status\":\"ok\",\"version\":\"" MB_VERSION "\"}");
	}
	free(key);
	json_decref(root);
}
