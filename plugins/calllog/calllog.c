/* calllog: a Call provider plugin. A PBX (Asterisk/FreePBX CDR over HTTP,
 * or anything that can POST JSON) sends one record per finished call to
 *   POST /plugins/calllog/cdr
 *   {"locationId": "...", "direction": "inbound" | "outbound",
 *    "from": "+15550001111", "to": "+15559990000",
 *    "status": "completed" | "answered" | "busy" | "no-answer" | "failed" |
 *              "canceled" | "voicemail" | "pending",
 *    "recording_url": "https://..." (optional), "duration": 42 (optional)}
 * and it becomes a Call entry in the contact's conversation: inbound calls
 * create unknown callers as contacts, outbound calls need an existing one.
 * Answers: 200 logged, 400 bad record, 422 refused by HighLevel, 503 try
 * again. Built against the installed plugin.h only. */
#include <jansson.h>
#include <mailbridge/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct state {
	const struct mb_host *host;
	struct mb_ctx *ctx;
};

static void *
calllog_init(const struct mb_host *host, struct mb_ctx *ctx, char **error_r)
{
	struct state *s = calloc(1, sizeof(*s));
	if (!s) {
		*error_r = strdup("out of memory");
		return NULL;
	}
	s->host = host;
	s->ctx = ctx;
	return s;
}

/* Calls are logged, never placed: nothing to send. */
static enum mb_send_result
calllog_send(void *state, const struct mb_outbound *job, char **reason_r)
{
	*reason_r = strdup("the calllog plugin logs calls; it cannot place them");
	return MB_SEND_PERMANENT;
}

static void
answer(struct mb_http_response *resp, int status, const char *msg)
{
	json_t *o = json_pack("{s:s}", status == 200 ? "status" : "error", msg);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
}

static const char *
field(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void
calllog_http(void *state, const struct mb_http_request *req, struct mb_http_response *resp)
{
	struct state *s = state;
	json_error_t jerr;
	json_t *cdr;
	const char *loc, *dir, *from, *to, *status, *rec;
	char *err = NULL, msg[256];
	int r;

	if (strcmp(req->path, "/cdr") != 0) {
		answer(resp, 404, "no such route (POST /plugins/calllog/cdr)");
		return;
	}
	if (strcmp(req->method, "POST") != 0) {
		answer(resp, 405, "POST a CDR");
		return;
	}
	cdr = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(cdr)) {
		json_decref(cdr);
		answer(resp, 400, "body must be a JSON object");
		return;
	}
	loc = field(cdr, "locationId");
	dir = field(cdr, "direction");
	from = field(cdr, "from");
	to = field(cdr, "to");
	status = field(cdr, "status");
	rec = field(cdr, "recording_url");
	if (!loc || !dir || !from || !to || !status) {
		snprintf(msg, sizeof(msg), "missing field: %s", !loc ? "locationId" : !dir ? "direction" :
		    !from ? "from" : !to ? "to" : "status");
		answer(resp, 400, msg);
	} else if (strcmp(dir, "inbound") && strcmp(dir, "outbound")) {
		answer(resp, 400, "direction must be inbound or outbound");
	} else if (rec && strncmp(rec, "https://", 8) && strncmp(rec, "http://", 7)) {
		answer(resp, 400, "recording_url must be an http(s) URL");
	} else {
		r = s->host->log_call(s->ctx, loc, !strcmp(dir, "inbound"), from, to, status, rec, &err);
		if (r == 1)
			answer(resp, 200, "logged");
		else
			answer(resp, r == 0 ? (strstr(err ? err : "", "E.164") ? 400 : 422) : 503, err ? err : "failed");
		free(err);
	}
	json_decref(cdr);
}

static void
calllog_deinit(void *state)
{
	free(state);
}

const struct mb_plugin mailbridge_plugin = {
	.abi = MB_PLUGIN_ABI,
	.name = "calllog",
	.types = MB_TYPE_CALL,
	.init = calllog_init,
	.send = calllog_send,
	.http = calllog_http,
	.deinit = calllog_deinit,
};
