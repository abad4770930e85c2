/* A test SMS plugin: its behaviour follows the message text, so the
 * tests can script a gateway: "temp" -> temporary failure, "perm" ->
 * permanent, "hang" -> never answers, "accept" -> accepted, the delivery
 * report comes later via GET /plugins/testsms/dlr?id=&status=;
 * "instant-dlr" / "instant-fail" -> accepted, with the delivery report
 * (delivered / failed) given before send returns, as a fast gateway's can
 * arrive before the host has recorded the send; anything else -> delivered. Every send is appended to [plugin testsms] outfile.
 * GET /plugins/testsms/mo?location=&from=&text= posts an inbound SMS. */
#include <mailbridge/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct state {
	const struct mb_host *host;
	struct mb_ctx *ctx;
	const char *outfile;
};

static void *
t_init(const struct mb_host *host, struct mb_ctx *ctx, char **error_r)
{
	struct state *s = calloc(1, sizeof(*s));
	s->host = host;
	s->ctx = ctx;
	s->outfile = host->config(ctx, "outfile");
	if (!s->outfile) {
		*error_r = strdup("outfile is required");
		free(s);
		return NULL;
	}
	host->log(ctx, 6, "test plugin ready");
	return s;
}

static enum mb_send_result
t_send(void *state, const struct mb_outbound *job, char **reason_r)
{
	struct state *s = state;
	FILE *f = fopen(s->outfile, "a");
	if (f) {
		fprintf(f, "%s %s %s\n", job->message_id, job->phone, job->message);
		fclose(f);
	}
	if (!strcmp(job->message, "temp")) {
		*reason_r = strdup("gateway busy");
		return MB_SEND_TEMPORARY;
	}
	if (!strcmp(job->message, "perm")) {
		*reason_r = strdup("number blocked");
		return MB_SEND_PERMANENT;
	}
	if (!strcmp(job->message, "hang")) {
		sleep(30);
		return MB_SEND_DELIVERED;
	}
	if (!strcmp(job->message, "instant-dlr") || !strcmp(job->message, "instant-fail")) {
		int delivered = !strcmp(job->message, "instant-dlr");
		if (s->host->update_status(s->ctx, job->message_id, delivered ? "delivered" : "failed",
		    delivered ? NULL : "DLR failed before send returned") != 1)
			s->host->log(s->ctx, 3, "early delivery report refused");
		return MB_SEND_ACCEPTED;
	}
	if (!strcmp(job->message, "accept")) {
		char key[256];
		snprintf(key, sizeof(key), "gw-%s", job->message_id);
		s->host->kv_put(s->ctx, key, job->message_id);
		return MB_SEND_ACCEPTED;
	}
	return MB_SEND_DELIVERED;
}

static void
reply(struct mb_http_response *resp, int status, const char *text)
{
	resp->status = status;
	resp->content_type = "text/plain";
	resp->body = strdup(text);
}

static void
t_http(void *state, const struct mb_http_request *req, struct mb_http_response *resp)
{
	struct state *s = state;
	char *err = NULL;

	if (!strcmp(req->path, "/dlr")) {
		const char *id = req->query(req, "id"), *st = req->query(req, "status");
		char *mid = id ? s->host->kv_get(s->ctx, id) : NULL;
		if (!mid) {
			reply(resp, 404, "unknown gateway id");
			return;
		}
		s->host->update_status(s->ctx, mid, st ? st : "delivered", st && !strcmp(st, "failed") ? "DLR 16: rejected" : NULL);
		free(mid);
		reply(resp, 200, "ok");
	} else if (!strcmp(req->path, "/mo")) {
		int r = s->host->post_inbound_sms(s->ctx, req->query(req, "location"), req->query(req, "from"),
		    req->query(req, "text"), &err);
		reply(resp, r == 1 ? 200 : r == 0 ? 422 : 503, r == 1 ? "posted" : err ? err : "failed");
		free(err);
	} else if (!strcmp(req->path, "/contact")) {
		char *id = NULL;
		int r = s->host->contact_by_phone(s->ctx, req->query(req, "location"), req->query(req, "phone"),
		    req->query(req, "create") != NULL, &id, &err);
		reply(resp, r == 1 ? 200 : r == 0 ? 422 : 503, r == 1 ? id : err ? err : "failed");
		free(id);
		free(err);
	} else if (!strcmp(req->path, "/upload")) {
		char *url = NULL;
		int r = s->host->upload(s->ctx, req->query(req, "location"), req->query(req, "contact"), "mms.jpg",
		    "image/jpeg", req->body, req->body_len, &url, &err);
		reply(resp, r == 1 ? 200 : r == 0 ? 422 : 503, r == 1 ? url : err ? err : "failed");
		free(url);
		free(err);
	} else {
		reply(resp, 404, "no route");
	}
}

static void
t_deinit(void *state)
{
	free(state);
}

const struct mb_plugin mailbridge_plugin = {
	.abi = MB_PLUGIN_ABI, .name = "testsms", .types = MB_TYPE_SMS,
	.init = t_init, .send = t_send, .http = t_http, .deinit = t_deinit,
};
