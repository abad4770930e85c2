#include "smtp_policy.h"
#include "test.h"

#include <string.h>

/* One result with two recipients, failing at stage `at`. */
static void
make(struct smtp_result *r, enum smtp_state at, int reply, int rc0, int rc1)
{
	static struct smtp_reply rc[3];
	memset(r, 0, sizeof(*r));
	r->failed_at = at;
	r->reply.code = reply;
	r->reply.text = "reply";
	rc[0].code = rc0;
	rc[0].text = "r0";
	rc[1].code = rc1;
	rc[1].text = "r1";
	rc[2].code = -1;
	r->rcpt = rc;
}

int
main(void)
{
	static const struct {
		enum smtp_state at;
		int reply, rc0, rc1;
		enum smtp_outcome o0, o1;
	} rows[] = {
		{ SMTP_DONE, 250, 250, 250, SMTP_OUT_SENT, SMTP_OUT_SENT },
		{ SMTP_DONE, 250, 250, 550, SMTP_OUT_SENT, SMTP_OUT_PERM },   /* partial */
		{ SMTP_DONE, 250, 250, 451, SMTP_OUT_SENT, SMTP_OUT_TEMP },
		{ SMTP_CONNECT, 0, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },      /* relay down */
		{ SMTP_STARTTLS, 0, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },     /* bad cert: never perm */
		{ SMTP_AUTH, 535, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },       /* our config, not the mail */
		{ SMTP_EHLO, 554, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },
		{ SMTP_MAIL, 550, 0, 0, SMTP_OUT_PERM, SMTP_OUT_PERM },
		{ SMTP_MAIL, 451, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },
		{ SMTP_RCPT, 550, 550, 450, SMTP_OUT_PERM, SMTP_OUT_TEMP },
		{ SMTP_RCPT, 0, 550, 0, SMTP_OUT_PERM, SMTP_OUT_TEMP },       /* died after rcpt 0 */
		{ SMTP_RCPT, 0, 250, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },       /* accepted, never sent */
		{ SMTP_RCPT, 421, 250, 421, SMTP_OUT_TEMP, SMTP_OUT_TEMP },
		{ SMTP_MAIL, 251, 0, 0, SMTP_OUT_TEMP, SMTP_OUT_TEMP },       /* unexpected 2xx */
		{ SMTP_DATA, 250, 250, 250, SMTP_OUT_TEMP, SMTP_OUT_TEMP },   /* 250, not 354, to DATA */
		{ SMTP_BODY, 0, 250, 550, SMTP_OUT_TEMP, SMTP_OUT_PERM },
		{ SMTP_DATA, 451, 250, 250, SMTP_OUT_TEMP, SMTP_OUT_TEMP },
		{ SMTP_BODY, 554, 250, 550, SMTP_OUT_PERM, SMTP_OUT_PERM },
		{ SMTP_BODY, 0, 250, 250, SMTP_OUT_TEMP, SMTP_OUT_TEMP },     /* lost at end of data */
		{ SMTP_BODY, 452, 250, 550, SMTP_OUT_TEMP, SMTP_OUT_PERM },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_result r;
		const struct smtp_reply *why;
		make(&r, rows[i].at, rows[i].reply, rows[i].rc0, rows[i].rc1);
		CHECK_IDX(smtp_policy_rcpt(&r, 0, &why) == rows[i].o0, i);
		CHECK_IDX(smtp_policy_rcpt(&r, 1, &why) == rows[i].o1, i);
		CHECK_IDX(why != NULL, i);
	}
	/* the deciding reply is the recipient's own when it was refused at RCPT */
	{
		struct smtp_result r;
		const struct smtp_reply *why;
		make(&r, SMTP_DONE, 250, 250, 550);
		smtp_policy_rcpt(&r, 1, &why);
		CHECK(why->code == 550 && strcmp(why->text, "r1") == 0);
	}
	static const struct { int code; enum smtp_outcome o; } codes[] = {
		{ 250, SMTP_OUT_SENT }, { 251, SMTP_OUT_SENT }, { 421, SMTP_OUT_TEMP }, { 450, SMTP_OUT_TEMP },
		{ 550, SMTP_OUT_PERM }, { 0, SMTP_OUT_TEMP }, { 999, SMTP_OUT_TEMP }, { 354, SMTP_OUT_TEMP },
	};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		CHECK_IDX(smtp_policy_code(codes[i].code) == codes[i].o, i);
	/* address checks guard libetpan's unescaped command buffer */
	static const struct { const char *a; bool ok; } addrs[] = {
		{ "a@b.test", true }, { "a@b@c", false }, { "a b@c.test", false }, { "a@b.test>", false },
		{ "a@b.test\r\nRSET", false }, { "@b.test", false }, { "a@", false },
	};
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++)
		CHECK_IDX(smtp_address_ok(addrs[i].a) == addrs[i].ok, i);
	return test_done("test_policy");
}
