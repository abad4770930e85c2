/* kannel: an SMS provider plugin for Kannel (bearerbox + smsbox).
 *
 * Outbound: GET <sendsms_url>?username&password&to&text&dlr-mask&dlr-url,
 * UTF-8 text sent as UCS-2 (coding=2) when it is not plain ASCII; Kannel
 * splits long messages itself (set max-messages in its sendsms-user).
 * The DLR URL points back at /plugins/kannel/dlr?id=<messageId>&type=%d:
 * type 1 (delivered to the phone) -> delivered; 2 or 16 (failed /
 * rejected by the SMSC) -> failed with the code; 8 (accepted by the SMSC)
 * and 4 (buffered) are progress, not results, and are only logged.
 * Inbound: Kannel's sms-service get-url calls /plugins/kannel/mo?from=%p&text=%a
 * and the message is posted to the location named by mo_location.
 * MMS attachments cannot ride on SMS: their URLs are appended to the text.
 *
 * [plugin kannel] keys: sendsms_url, username, password, mo_location,
 * sender (optional; else Kannel's global-sender), timeout (s, default 10),
 * secret (the host requires it on /plugins/kannel/...: the DLR URL
 * carries it, and Kannel's get-url must too: ...&secret=<secret>).
 * Built against the installed plugin.h only. */
#include <curl/curl.h>
#include <mailbridge/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct state {
	const struct mb_host *host;
	struct mb_ctx *ctx;
	const char *url, *user, *pass, *mo_location, *sender, *secret;
	long timeout;
};

static void *
k_init(const struct mb_host *host, struct mb_ctx *ctx, char **error_r)
{
	struct state *s = calloc(1, sizeof(*s));
	const char *t;

	if (!s) {
		*error_r = strdup("out of memory");
		return NULL;
	}
	s->host = host;
	s->ctx = ctx;
	s->url = host->config(ctx, "sendsms_url");
	s->user = host->config(ctx, "username");
	s->pass = host->config(ctx, "password");
	s->mo_location = host->config(ctx, "mo_location");
	s->sender = host->config(ctx, "sender");
	s->secret = host->config(ctx, "secret");
	t = host->config(ctx, "timeout");
	s->timeout = t ? atol(t) : 10;
	if (!s->url || !s->user || !s->pass) {
		*error_r = strdup("[plugin kannel] needs sendsms_url, username and password");
		free(s);
		return NULL;
	}
	return s;
}

static size_t
k_sink(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/* buf + sep + key=value (escaped); NULL in or out of memory gives NULL */
static char *
k_append_sep(char *buf, const char *sep, const char *key, const char *value)
{
	char *ev = buf ? curl_easy_escape(NULL, value, 0) : NULL;
	size_t len = ev ? strlen(buf) + strlen(sep) + strlen(key) + strlen(ev) + 2 : 0;
	char *out = ev ? malloc(len) : NULL;

	if (out)
		snprintf(out, len, "%s%s%s=%s", buf, sep, key, ev);
	curl_free(ev);
	free(buf);
	return out;
}

static char *
k_append(char *buf, const char *key, const char *value)
{
	return k_append_sep(buf, "&", key, value);
}

static int
is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

static enum mb_send_result
k_send(void *state, const struct mb_outbound *job, char **reason_r)
{
	struct state *s = state;
	CURL *h = curl_easy_init();
	char *url = malloc(strlen(s->url) + 2), *text, *dlr;
	const char *pub = s->host->public_url(s->ctx);
	size_t tlen = strlen(job->message) + 1;
	long status = 0;
	CURLcode rc;
	enum mb_send_result r;

	for (size_t i = 0; i < job->n_attachments; i++)
		tlen += strlen(job->attachments[i]) + 1;
	text = malloc(tlen);
	if (!h || !url || !text) {
		curl_easy_cleanup(h);
		free(url);
		free(text);
		*reason_r = strdup("out of memory");
		return MB_SEND_TEMPORARY;
	}
	strcpy(text, job->message);
	for (size_t i = 0; i < job->n_attachments; i++) {
		strcat(text, "\n");
		strcat(text, job->attachments[i]);
	}
	sprintf(url, "%s?", s->url);
	url = k_append(url, "username", s->user);
	url = k_append(url, "password", s->pass);
	url = k_append(url, "to", job->phone);
	if (s->sender)
		url = k_append(url, "from", s->sender);
	url = k_append(url, "text", text);
	url = k_append(url, "charset", "UTF-8");
	if (!is_ascii(text))
		url = k_append(url, "coding", "2");
	url = k_append(url, "dlr-mask", "27");   /* delivered, failed, smsc ack, smsc reject */
	dlr = malloc(strlen(pub) + 32);
	if (dlr)
		sprintf(dlr, "%s/plugins/kannel/dlr", pub);
	dlr = k_append_sep(dlr, "?", "id", job->message_id);
	if (s->secret)
		dlr = k_append(dlr, "secret", s->secret);
	/* Kannel fills in %d itself: it must stay unescaped */
	if (dlr) {
		char *d2 = malloc(strlen(dlr) + 16);
		if (d2)
			sprintf(d2, "%s&type=%%d", dlr);
		free(dlr);
		dlr = d2;
	}
	url = dlr ? k_append(url, "dlr-url", dlr) : (free(url), NULL);
	free(dlr);
	free(text);
	if (!url) {
		curl_easy_cleanup(h);
		*reason_r = strdup("out of memory");
		return MB_SEND_TEMPORARY;
	}

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, s->timeout);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, k_sink);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	free(url);
	if (rc != CURLE_OK) {
		char buf[200];
		snprintf(buf, sizeof(buf), "kannel unreachable: %s", curl_easy_strerror(rc));
		*reason_r = strdup(buf);
		r = MB_SEND_TEMPORARY;
	} else if (status == 202 || status == 200) {
		r = MB_SEND_ACCEPTED;   /* the DLR decides */
	} else {
		char buf[100];
		snprintf(buf, sizeof(buf), "kannel answered HTTP %ld", status);
		*reason_r = strdup(buf);
		r = status >= 500 || status == 503 ? MB_SEND_TEMPORARY : MB_SEND_PERMANENT;
	}
	return r;
}

static void
k_reply(struct mb_http_response *resp, int status, const char *text)
{
	resp->status = status;
	resp->content_type = "text/plain";
	resp->body = strdup(text);   /* NULL (out of memory) is an empty body to the host */
}

static void
k_http(void *state, const struct mb_http_request *req, struct mb_http_response *resp)
{
	struct state *s = state;

	if (!strcmp(req->path, "/dlr")) {
		const char *id = req->query(req, "id"), *type = req->query(req, "type");
		int t = type ? atoi(type) : 0;
		char err[64];
		if (!id || !t) {
			k_reply(resp, 400, "id and type required");
			return;
		}
		int r = 0;
		if (t == 1) {
			r = s->host->update_status(s->ctx, id, "delivered", NULL);
		} else if (t == 2 || t == 16) {
			snprintf(err, sizeof(err), "Kannel DLR type %d (%s)", t, t == 2 ? "delivery failed" : "rejected by SMSC");
			r = s->host->update_status(s->ctx, id, "failed", err);
		}
		/* not recorded: a 503 tells whoever calls (Kannel, or a retrying
		 * proxy) to come again */
		k_reply(resp, r < 0 ? 503 : 200, r < 0 ? "not recorded; try again" : "ok");
	} else if (!strcmp(req->path, "/mo")) {
		const char *from = req->query(req, "from"), *text = req->query(req, "text");
		char *err = NULL;
		int r;
		if (!from || !text || !s->mo_location) {
			k_reply(resp, 400, "from and text required (and mo_location configured)");
			return;
		}
		r = s->host->post_inbound_sms(s->ctx, s->mo_location, from, text, &err);
		/* Kannel's get-url wants a body it may send back as a reply: send none */
		k_reply(resp, r == 1 ? 200 : r == 0 ? 422 : 503, "");
		if (r != 1)
			s->host->log(s->ctx, 4, err ? err : "inbound SMS not posted");
		free(err);
	} else {
		k_reply(resp, 404, "no route");
	}
}

static void
k_deinit(void *state)
{
	free(state);
}

const struct mb_plugin mailbridge_plugin = {
	.abi = MB_PLUGIN_ABI, .name = "kannel", .types = MB_TYPE_SMS,
	.init = k_init, .send = k_send, .http = k_http, .deinit = k_deinit,
};
