#include "payload.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE "\"type\":\"Email\",\"locationId\":\"L1\",\"messageId\":\"M1\""

static char *
body_of(const char *mid)
{
	char *body = malloc(256);
	snprintf(body, 256, "{\"type\":\"Email\",\"locationId\":\"L1\",\"messageId\":\"%s\","
	    "\"emailTo\":[\"a@b.test\"],\"html\":\"x\"}", mid);
	return body;
}

static struct payload *
parsed(const char *body)
{
	const char *error, *field;
	return payload_parse(body, strlen(body), &error, &field);
}

/* The webhook's parsed payloads kept for their senders: taken once, by
 * messageId and only for the very body they came from; refused when
 * full; dropped after their time. */
static void
test_cache(void)
{
	struct payload_cache *c = payload_cache_new(2, 1 << 20, 1000);
	char *ba = body_of("A"), *bb = body_of("B"), *bx = body_of("X"), *by = body_of("Y");
	char *other = body_of("A");
	struct payload *a = parsed(ba), *b = parsed(bb), *x = parsed(bx), *got;

	other[strlen(other) - 3] = 'z';                   /* A's id, another body */
	CHECK(payload_cache_take(c, "A", ba, strlen(ba), 0) == NULL);
	CHECK(payload_cache_put(c, "A", ba, strlen(ba), a, 0));
	CHECK(payload_cache_put(c, "B", bb, strlen(bb), b, 10));
	CHECK(!payload_cache_put(c, "X", bx, strlen(bx), x, 20));   /* full: still the caller's */
	CHECK(payload_cache_take(c, "A", other, strlen(other), 30) == NULL);   /* not this body */
	CHECK(payload_cache_take(c, "B", ba, strlen(ba), 30) == NULL);         /* not this id */
	got = payload_cache_take(c, "B", bb, strlen(bb), 30);
	CHECK(got == b && strcmp(got->message_id, "B") == 0);
	payload_free(got);
	CHECK(payload_cache_take(c, "B", bb, strlen(bb), 30) == NULL);         /* once */
	CHECK(payload_cache_put(c, "X", bx, strlen(bx), x, 40));               /* room again */
	CHECK(payload_cache_take(c, "A", ba, strlen(ba), 1000) == NULL);       /* its time is up (freed) */
	got = payload_cache_take(c, "X", bx, strlen(bx), 1000);
	CHECK(got == x);
	payload_free(got);
	CHECK(payload_cache_put(c, "Y", by, strlen(by), parsed(by), 1000));
	payload_cache_free(c);                                                 /* frees what is left */
	/* bounded in bytes too: two bodies fit, a third waits for room */
	c = payload_cache_new(8, 2 * strlen(ba), 1000);
	a = parsed(ba);
	b = parsed(bb);
	x = parsed(bx);
	CHECK(payload_cache_put(c, "A", ba, strlen(ba), a, 0));
	CHECK(payload_cache_put(c, "B", bb, strlen(bb), b, 0));
	CHECK(!payload_cache_put(c, "X", bx, strlen(bx), x, 0));
	payload_free(payload_cache_take(c, "A", ba, strlen(ba), 0));
	CHECK(payload_cache_put(c, "X", bx, strlen(bx), x, 0));
	payload_cache_free(c);
	free(ba);
	free(bb);
	free(bx);
	free(by);
	free(other);
}

int
main(void)
{
	static const struct {
		const char *body;
		const char *field;    /* NULL = accepted */
		const char *error;    /* substring, for rejected rows */
	} rows[] = {
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"<p>x</p>\"}", NULL, NULL },
		{ "{" BASE ",\"emailTo\":\"a@b.test, C <c@d.test>\",\"html\":\"x\"}", NULL, NULL },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"message\":\"plain\"}", NULL, NULL },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"]}", "html", "missing" },
		{ "{" BASE ",\"html\":\"x\"}", "emailTo", "missing" },
		{ "{" BASE ",\"emailTo\":[],\"html\":\"x\"}", "emailTo", "missing" },
		{ "{" BASE ",\"emailTo\":[\"x\"],\"html\":\"x\"}", "emailTo", "valid email" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"subject\":\"a\\r\\nBcc: e@v.il\"}", "subject", "CR" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"subject\":\"a\\u0000b\"}", NULL, "JSON" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"emailFrom\":\"A\\nB <a@b.test>\"}", "emailFrom", "CR" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"attachments\":[\"file:///etc/passwd\"]}", "attachments", "http" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"attachments\":[1]}", "attachments", "URL" },
		{ "{\"type\":\"Email\",\"messageId\":\"M1\",\"emailTo\":[\"a@b.test\"],\"html\":\"x\"}", "locationId", "missing" },
		{ "{\"type\":\"Email\",\"locationId\":\"L/1\",\"messageId\":\"M1\",\"emailTo\":[\"a@b.test\"],\"html\":\"x\"}", "locationId", "letters" },
		{ "{\"type\":\"Fax\",\"locationId\":\"L1\",\"messageId\":\"M1\"}", "type", "unsupported" },
		{ "{\"type\":\"SMS\",\"locationId\":\"L1\",\"messageId\":\"M1\",\"phone\":\"+15550001111\",\"message\":\"hi\"}", NULL, NULL },
		{ "{\"type\":\"SMS\",\"locationId\":\"L1\",\"messageId\":\"M1\",\"phone\":\"5550001111\",\"message\":\"hi\"}", "phone", "E.164" },
		{ "{\"type\":\"Custom\",\"locationId\":\"L1\",\"messageId\":\"M1\",\"emailTo\":\"a@b.test\",\"html\":\"x\"}", NULL, NULL },
		{ "{\"type\":\"Email\",\"type\":\"SMS\"}", NULL, "JSON" },
		/* what cJSON lets through and payload_parse refuses itself (as jansson did) */
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\\u0000b\"}", NULL, "u0000" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\\\\\\u0000b\"}", NULL, "u0000" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\xff\"}", NULL, "UTF-8" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"\xed\xa0\x80\"}", NULL, "UTF-8" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"\xc0\xaf\"}", NULL, "UTF-8" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\x01b\"}", NULL, "control" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\nb\"}", NULL, "control" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\tb\"}", NULL, "control" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\\uzzzzb\"}", NULL, "hex" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\\u0 00b\"}", NULL, "hex" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"a\\u00", NULL, "hex" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"\\ud800\"}", NULL, "JSON" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"x\":{\"k\":1,\"k\":2}}", NULL, "duplicate" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"x\":[{\"k\":1},{\"j\":1,\"k\":[],\"j\":2}]}", NULL, "duplicate" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\"} {}", NULL, "after" },
		{ "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\"}\x0b", NULL, "control" },
		{ " {" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"x\",\"x\":{\"k\":1,\"j\":2}}\r\n", NULL, NULL },
		{ "[1]", NULL, "object" },
		{ "{\"type\":", NULL, "JSON" },
		{ "", NULL, "JSON" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *error = NULL, *field = NULL;
		struct payload *p = payload_parse(rows[i].body, strlen(rows[i].body), &error, &field);
		bool want_ok = rows[i].field == NULL && rows[i].error == NULL;
		CHECK_IDX((p != NULL) == want_ok, i);
		if (!want_ok) {
			CHECK_IDX(rows[i].field ? field && strcmp(field, rows[i].field) == 0 : field == NULL, i);
			CHECK_IDX(error && strstr(error, rows[i].error), i);
		}
		payload_free(p);
	}
	/* shapes of a good email */
	{
		const char *b = "{" BASE ",\"emailTo\":\"\\\"Doe, Jane\\\" <j@d.test>, k@d.test\","
		    "\"emailCc\":[\"c@d.test\"],\"emailBcc\":\"b@d.test\",\"emailFrom\":\"Me <me@x.test>\","
		    "\"subject\":\"Grüße\",\"html\":\"<p>x</p>\",\"replyToAltId\":\"<a@b>\","
		    "\"attachments\":[\"https://h/x.pdf\"]}";
		const char *error, *field;
		struct payload *p = payload_parse(b, strlen(b), &error, &field);
		CHECK(p != NULL);
		if (p) {
			CHECK(p->n_to == 2 && strcmp(p->to[0].name, "Doe, Jane") == 0 && strcmp(p->to[1].addr, "k@d.test") == 0);
			CHECK(p->n_cc == 1 && p->n_bcc == 1 && p->n_attachments == 1);
			CHECK(strcmp(p->from->addr, "me@x.test") == 0 && strcmp(p->subject, "Grüße") == 0);
			CHECK(strcmp(p->reply_to_alt_id, "<a@b>") == 0);
		}
		payload_free(p);
	}
	/* strings come out whole and decoded: escapes, an escaped backslash
	 * before "u0000", characters outside the BMP; a NUL byte inside the
	 * length is refused */
	{
		const char *b = "{" BASE ",\"emailTo\":[\"a@b.test\"],\"subject\":\"caf\\u00e9 \\ud83d\\ude00\","
		    "\"html\":\"<p class=\\\"q\\\">a\\\\u0000b\\n\\t\\/</p>\"}";
		const char *error, *field;
		struct payload *p = payload_parse(b, strlen(b), &error, &field);
		CHECK(p != NULL);
		if (p) {
			CHECK(strcmp(p->subject, "caf\xc3\xa9 \xf0\x9f\x98\x80") == 0);
			CHECK(strcmp(p->html, "<p class=\"q\">a\\u0000b\n\t/</p>") == 0);
		}
		payload_free(p);
		char with_nul[] = "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"ab\"}";
		*strstr(with_nul, "ab") = '\0';
		p = payload_parse(with_nul, sizeof(with_nul) - 1, &error, &field);
		CHECK(p == NULL && strstr(error, "NUL"));
		payload_free(p);
	}
	/* no body at all */
	{
		const char *error, *field;
		CHECK(payload_parse(NULL, 0, &error, &field) == NULL && strstr(error, "empty"));
	}
	/* byte-by-byte truncations never crash and never pass */
	{
		const char *b = "{" BASE ",\"emailTo\":[\"a@b.test\"],\"html\":\"<p>x</p>\"}";
		size_t n = strlen(b);
		for (size_t cut = 0; cut < n; cut++) {
			char *copy = malloc(cut ? cut : 1);   /* no NUL: ASan sees overreads */
			const char *error, *field;
			memcpy(copy, b, cut);
			struct payload *p = payload_parse(copy, cut, &error, &field);
			CHECK_IDX(p == NULL, cut);
			payload_free(p);
			free(copy);
		}
	}
	test_cache();
	return test_done("test_payload");
}
