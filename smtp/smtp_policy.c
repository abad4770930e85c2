#include "smtp_policy.h"

enum smtp_outcome
smtp_policy_code(int code)
{
	if (code >= 200 && code < 300)
		return SMTP_OUT_SENT;
	if (code >= 500 && code < 600)
		return SMTP_OUT_PERM;
	/* 4xx, 0 (no reply), or garbage: try again later */
	return SMTP_OUT_TEMP;
}

enum smtp_outcome
smtp_policy_rcpt(const struct smtp_result *res, size_t i, const struct smtp_reply **reply_r)
{
	const struct smtp_reply *rr = &res->rcpt[i];

	*reply_r = &res->reply;
	if (res->failed_at < SMTP_MAIL)
		return SMTP_OUT_TEMP;
	if (res->failed_at == SMTP_MAIL)
		return smtp_policy_code(res->reply.code);
	if (res->failed_at == SMTP_RCPT) {
		/* a recipient not reached (stream died mid-RCPT) has code 0 */
		if (rr->code > 0)
			*reply_r = rr;
		return rr->code > 0 ? smtp_policy_code(rr->code) : SMTP_OUT_TEMP;
	}
	/* DATA or end-of-data: a recipient refused at RCPT keeps its own reply */
	if (smtp_policy_code(rr->code) != SMTP_OUT_SENT) {
		*reply_r = rr;
		return smtp_policy_code(rr->code);
	}
	return smtp_policy_code(res->reply.code);
}
