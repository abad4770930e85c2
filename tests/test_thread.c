/* thread: reply/bounce tokens (made under a key, parsed without case) and
 * the threading headers. */
#include "store_threads.h"
#include "test.h"
#include "thread.h"

#include <stdlib.h>
#include <string.h>

int
main(void)
{
	unsigned char k1[32], k2[32];
	char *a, *b, *c, *irt, *refs;
	static const struct { const char *addr, *local, *domain, *want, *tag; } rows[] = {
		{ "reply+0a1b2c3d4e5f6071@mail.test", "reply", "mail.test", "0a1b2c3d4e5f6071", "" },
		{ "REPLY+0A1B2C3D4E5F6071@MAIL.TEST", "reply", "mail.test", "0a1b2c3d4e5f6071", "" },
		{ "bounce+ab@mail.test", "bounce", "mail.test", "ab", "" },
		{ "bounce+ab@mail.test", "reply", "mail.test", NULL, "" },
		{ "reply+ab@other.test", "reply", "mail.test", NULL, "" },
		{ "reply+@mail.test", "reply", "mail.test", NULL, "" },
		{ "replyx+ab@mail.test", "reply", "mail.test", NULL, "" },
		{ "reply@mail.test", "reply", "mail.test", NULL, "" },
		{ "reply+ab", "reply", "mail.test", NULL, "" },
		{ "reply+ab@mail.test", "reply", NULL, NULL, "" },
		/* a mailbox's own plus address: replies bare, bounces tagged b */
		{ "sales+0a1b2c3d4e5f6071@shared.test", "sales", "shared.test", "0a1b2c3d4e5f6071", "" },
		{ "sales+b0a1b2c3d4e5f6071@shared.test", "sales", "shared.test", "0a1b2c3d4e5f6071", "b" },
		{ "sales+0a1b2c3d4e5f6071@shared.test", "sales", "shared.test", NULL, "b" },
		{ "sales+b@shared.test", "sales", "shared.test", NULL, "b" },          /* a tag and no token */
		{ "support+b0a1b2c3d4e5f6071@shared.test", "sales", "shared.test", NULL, "b" },
	};

	memset(k1, 1, sizeof(k1));
	memset(k2, 2, sizeof(k2));
	a = thread_token_make(k1, "L1", "m1");
	b = thread_token_make(k1, "L1", "m1");
	c = thread_token_make(k2, "L1", "m1");
	CHECK(strlen(a) == 16 && strspn(a, "0123456789abcdef") == 16);
	CHECK(strcmp(a, b) == 0);        /* the same message, the same token */
	CHECK(strcmp(a, c) != 0);        /* another key, another token */
	free(b);
	b = thread_token_make(k1, "L2", "m1");
	CHECK(strcmp(a, b) != 0);        /* another location */
	free(a);
	free(b);
	free(c);

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct thread_form form = { rows[i].local, rows[i].tag, rows[i].domain };
		char *t = thread_token_parse(rows[i].addr, &form);
		CHECK_IDX(rows[i].want ? t && strcmp(t, rows[i].want) == 0 : t == NULL, i);
		free(t);
	}

	{
		struct msgmap parent = { 0 };
		parent.references = (char *)"<root@x.test>";
		thread_headers(&parent, "p@x.test", &irt, &refs);
		CHECK(irt && strcmp(irt, "<p@x.test>") == 0);
		CHECK(refs && strcmp(refs, "<root@x.test> <p@x.test>") == 0);
		free(irt);
		free(refs);
		thread_headers(NULL, "alt@x.test", &irt, &refs);
		CHECK(irt && refs && strcmp(refs, "<alt@x.test>") == 0);
		free(irt);
		free(refs);
		thread_headers(NULL, "bad id@x.test", &irt, &refs);
		CHECK(irt == NULL && refs == NULL);
		thread_headers(NULL, NULL, &irt, &refs);
		CHECK(irt == NULL && refs == NULL);
	}
	return test_done("test_thread");
}
