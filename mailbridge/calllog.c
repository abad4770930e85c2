#include "calllog.h"
#include "app.h"
#include "config.h"
#include "contact.h"
#include "ghl.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

bool
calllog_status_ok(const char *s)
{
	static const char *const ok[] = { "pending", "completed", "answered", "busy", "no-answer", "failed",
		"canceled", "voicemail", NULL };
	for (int i = 0; s && ok[i]; i++)
		if (!strcmp(s, ok[i]))
			return true;
	return false;
}

static bool
e164(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 8 && n <= 16 && s[0] == '+' && strspn(s + 1, "0123456789") == n - 1;
}

int
calllog_post(struct app *app, const struct location_config *loc, const struct call_record *c,
    char **message_id_r, char **error_r)
{
	struct ghl_step s = { GHL_OK, NULL };
	const char *party = c->inbound ? c->from : c->to;   /* the contact's number */
	char *contact = NULL, *conv = NULL, date[40];
	json_t *body;
	struct ghl_result res = { 0 };
	time_t t = (time_t)((c->date_ms ? c->date_ms : now_ms()) / 1000);
	struct tm tm;
	int ret;
	const char *provider = loc->call_provider_id ? loc->call_provider_id : loc->provider_id;

	*message_id_r = NULL;
	if (!e164(c->from) || !e164(c->to) || !calllog_status_ok(c->status)) {
		*error_r = xstrdup("a call needs E.164 from and to numbers and a HighLevel call status");
		return 0;
	}
	if (!provider) {
		*error_r = xasprintf("location %s has no call_provider_id (the Call provider's conversationProviderId)", loc->id);
		return 0;
	}
	if (!contact_conversation(app, loc, NULL, party, NULL, c->inbound, &contact, &conv, &s))
		goto fail;
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
	body = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}}", "type", "Call", "conversationId", conv,
	    "conversationProviderId", provider, "date", date,
	    "call", "from", c->from, "to", c->to, "status", c->status);
	if (c->recording_url)
		json_object_set_new(body, "attachments", json_pack("[s]", c->recording_url));
	if (c->inbound) {
		json_object_set_new(body, "contactId", json_string(contact));
		json_object_set_new(body, "direction", json_string("inbound"));
	}
	ghl_call(app->ghl, loc->id, "POST", c->inbound ? "/conversations/messages/inbound" :
	    "/conversations/messages/outbound", GHL_VERSION_CONVERSATIONS, body, &res);
	if (res.cls == GHL_OK && ghl_jstr(res.body, "messageId")) {
		*message_id_r = xstrdup(ghl_jstr(res.body, "messageId"));
		log_info("calllog: %s call logged locationId=%s messageId=%s", c->inbound ? "inbound" : "outbound",
		    loc->id, *message_id_r);
		ret = 1;
		goto out;
	}
	if (res.cls == GHL_OK) {
		res.cls = GHL_PERMANENT;
		free(res.error);
		res.error = xstrdup("HighLevel answered without a messageId");
	}
	ghl_step_from(&s, &res, "call log");
fail:
	*error_r = xstrdup(s.error ? s.error : "failed");
	ret = s.cls == GHL_PERMANENT ? 0 : -1;
out:
	ghl_result_clear(&res);
	free(contact);
	free(conv);
	free(s.error);
	return ret;
}
