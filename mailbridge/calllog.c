#include "calllog.h"
#include "app.h"
#include "config.h"
#include "contact.h"
#include "ghl.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

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
	struct ghl_step s = { .cls = GHL_OK };
	const char *party = c->inbound ? c->from : c->to;   /* the contact's number */
	char *contact = NULL, *conv = NULL;
	struct ghl_result res = { 0 };
	struct ghl_posted posted = { 0 };
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
	{
		const char *rec[1] = { c->recording_url };
		struct ghl_message msg = { .type = GHL_MSG_CALL, .outbound = !c->inbound, .contact_id = contact,
			.conversation_id = conv, .provider_id = provider, .date_ms = c->date_ms ? c->date_ms : now_ms(),
			.attachments = rec, .n_attachments = c->recording_url ? 1 : 0,
			.call_from = c->from, .call_to = c->to, .call_status = c->status };
		if (ghl_message_post(app->ghl, loc->id, &msg, &posted, &res) == GHL_OK) {
			*message_id_r = posted.message_id;
			posted.message_id = NULL;
			log_info("calllog: %s call logged locationId=%s messageId=%s", c->inbound ? "inbound" : "outbound",
			    loc->id, *message_id_r);
			ret = 1;
			goto out;
		}
	}
	ghl_step_from(&s, &res, "call log");
fail:
	*error_r = xstrdup(s.error ? s.error : "failed");
	ret = s.cls == GHL_PERMANENT ? 0 : -1;
out:
	ghl_result_clear(&res);
	ghl_posted_clear(&posted);
	free(contact);
	free(conv);
	free(s.error);
	return ret;
}
