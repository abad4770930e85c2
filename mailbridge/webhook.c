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
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Returns true when the request may proceed; otherwise resp is filled. */
static bool
webhook_verify(struct app *app, const struct http_request *req, struct http_response *resp)
{
	enum sig_result r = sig_verify(app->keys, http_header(req, "X-GHL-Signature"),
	    http_header(req, "X-WH-Signature"), req->body, req->body_len);

	if (r == SIG_OK)
		return true;
	if (r == SIG_ABSENT && !app->cfg->require_signature)
		return true;
	metrics_inc(M_WEBHOOK_BAD_SIGNATURE);
	log_warn("webhook: rejected path=%s reason=\"%s\"", req->path,
	    r == SIG_ABSENT ? "signature required" : sig_result_str(r));
	http_json_error(resp, 401, r == SIG_ABSENT ? "signature required" : sig_result_str(r), NULL);
	return false;
}

void
webhook_provider(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	const char *error, *field;
	struct payload *p;
	const struct location_config *loc;
	int r;

	if (!webhook_verify(app, req, resp))
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
	if (p->kind != PAYLOAD_EMAIL && !plugin_for(app->plugins, loc, MB_TYPE_SMS)) {
		metrics_inc(M_WEBHOOK_UNSUPPORTED_TYPE);
		log_warn("webhook: rejected locationId=%s messageId=%s reason=\"no %s provider\"",
		    p->location_id, p->message_id, p->type);
		http_json_error(resp, 422, "no provider for this message type at this location", "type");
		payload_free(p);
		return;
	}
	/* the raw body is what we store: it verified, and it validated */
	r = store_job_add(app->store, p->message_id, p->location_id, p->type, p->email_message_id, req->body);
	if (r < 0) {
		/* 503, not 500: HighLevel does not retry either, but the error
		 * says it was us, and nothing was acknowledged */
		metrics_inc(M_WEBHOOK_STORE_ERROR);
		http_json_error(resp, 503, "store unavailable", NULL);
	} else {
		json_t *o = json_pack("{s:s, s:s}", "status", r == 1 ? "accepted" : "duplicate",
		    "messageId", p->message_id);
		resp->status = 200;
		resp->content_type = "application/json";
		resp->body = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		log_info("webhook: %s locationId=%s messageId=%s type=%s", r == 1 ? "accepted" : "duplicate",
		    p->location_id, p->message_id, p->type);
		metrics_inc(r == 1 ? M_WEBHOOK_ACCEPTED : M_WEBHOOK_DUPLICATE);
		if (r == 1 && app->outbound)
			outbound_wake(app->outbound);
	}
	payload_free(p);
}

void
webhook_health(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	if (store_ping(app->store) == 1)
		http_text(resp, 200, "application/json", "{\"status\":\"ok\"}");
	else
		http_text(resp, 503, "application/json", "{\"status\":\"store unavailable\"}");
}

/* Marketplace webhooks carry timestamp + webhookId (REFERENCE §2). */
#define WEBHOOK_REPLAY_WINDOW_MS (5 * 60 * 1000)

static int64_t
parse_iso8601_ms(const char *s)
{
	struct tm tm = { 0 };
	const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return -1;
	return (int64_t)timegm(&tm) * 1000;
}

void
webhook_app(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	json_error_t jerr;
	json_t *root;
	const char *type, *loc, *company, *ts, *wid;
	int r = 0;

	if (!webhook_verify(app, req, resp))
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
	ts = json_string_value(json_object_get(root, "timestamp"));
	wid = json_string_value(json_object_get(root, "webhookId"));
	if (!type) {
		http_json_error(resp, 400, "missing required field", "type");
	} else if (ts && (parse_iso8601_ms(ts) < 0 ||
	    llabs(now_ms() - parse_iso8601_ms(ts)) > WEBHOOK_REPLAY_WINDOW_MS)) {
		log_warn("webhook: app event %s rejected: timestamp %s outside the replay window", type, ts);
		http_json_error(resp, 400, "timestamp outside the accepted window", "timestamp");
	} else if (wid && (r = store_webhook_seen(app->store, wid, now_ms())) == 0) {
		http_text(resp, 200, "application/json", "{\"status\":\"duplicate\"}");
	} else if (r < 0) {
		http_json_error(resp, 503, "store unavailable", NULL);
	} else if (strcmp(type, "INSTALL") && strcmp(type, "UNINSTALL")) {
		/* other app events are not ours to act on; acknowledge them */
		http_text(resp, 200, "application/json", "{\"status\":\"ignored\"}");
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
			http_text(resp, 200, "application/json", "{\"status\":\"ok\"}");
	}
	json_decref(root);
}
