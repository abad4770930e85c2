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

/* The reply that ended an unfinished transaction: a 2xx there is a relay
 * saying something libetpan did not expect (251 to MAIL, 250 to DATA), so
 * the message was not sent; try again rather than report it delivered. */
static enum smtp_outcome
failure_code(int code)
{
	enum smtp_outcome o = smtp_policy_code(code);
	return o == SMTP_OUT_SENT ? SMTP_OUT_TEMP : o;
}

enum smtp_outcome
smtp_policy_rcpt(const struct smtp_result *res, size_t i, const struct smtp_reply **reply_r)
{
	const struct smtp_reply *rr = &res->rcpt[i];

	*reply_r = &res->reply;
	if (res->failed_at < SMTP_MAIL)
		return SMTP_OUT_TEMP;
	if (res->failed_at == SMTP_MAIL)
		return failure_code(res->reply.code);
	/* a recipient refused at RCPT keeps its own reply, whatever came later */
	if (rr->code > 0 && smtp_policy_code(rr->code) != SMTP_OUT_SENT) {
		*reply_r = rr;
		return smtp_policy_code(rr->code);
	}
	if (res->failed_at == SMTP_DONE)
		return smtp_policy_code(res->reply.code);
	/* accepted (or not reached) but the transaction did not finish: a
	 * stream that died mid-RCPT, or DATA / end-of-data refused */
	return failure_code(res->reply.code);
}
