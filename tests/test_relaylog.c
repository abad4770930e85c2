/* relaylog: a Message-ID counts as kept by Postfix only when cleanup's
 * message-id line is followed by qmgr's from= line, with our envelope
 * sender, for the same queue id;
 * an aborted transaction, another message, or a line cut off by the tail
 * does not. */
#include "relaylog.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const log_lines =
    "Nov 26 20:00:00 mx postfix/smtpd[10]: connect from localhost[127.0.0.1]\n"
    /* aborted: the client went away after the header; no qmgr line */
    "Nov 26 20:00:01 mx postfix/cleanup[11]: 1A2B3C: message-id=<mb.aborted@mail.test>\n"
    "Nov 26 20:00:01 mx postfix/smtpd[10]: lost connection after DATA from localhost[127.0.0.1]\n"
    /* kept */
    "Nov 26 20:00:02 mx postfix/cleanup[11]: 4D5E6F: message-id=<mb.kept@mail.test>\n"
    "Nov 26 20:00:02 mx postfix/qmgr[12]: 4D5E6F: from=<bounce+x@mail.test>, size=700, nrcpt=1 (queue active)\n"
    /* a prefix of another id must not match */
    "Nov 26 20:00:03 mx postfix/cleanup[11]: 777AAA: message-id=<mb.kept@mail.test.other>\n"
    "Nov 26 20:00:03 mx postfix/qmgr[12]: 777AAA: from=<bounce+y@mail.test>, size=700, nrcpt=1 (queue active)\n"
    /* aborted once, then kept under another queue id */
    "Nov 26 20:00:04 mx postfix/cleanup[11]: 88BB01: message-id=<mb.second@mail.test>\n"
    "Nov 26 20:00:05 mx postfix/cleanup[11]: 88BB02: message-id=<mb.second@mail.test>\n"
    "Nov 26 20:00:05 mx postfix/qmgr[12]: 88BB01: removed\n"
    "Nov 26 20:00:05 mx postfix/qmgr[12]: 88BB02: from=<bounce+z@mail.test>, size=700, nrcpt=1 (queue active)\n"
    /* the qmgr line of another queue id after our message-id line */
    "Nov 26 20:00:06 mx postfix/cleanup[11]: 99CC01: message-id=<mb.other-qid@mail.test>\n"
    "Nov 26 20:00:06 mx postfix/qmgr[12]: 99CC02: from=<bounce+w@mail.test>, size=700, nrcpt=1 (queue active)\n"
    /* ours, then a stranger's mail carrying the same Message-ID between our
     * cleanup line and our qmgr line */
    "Nov 26 20:00:07 mx postfix/cleanup[11]: AA0001: message-id=<mb.crowded@mail.test>\n"
    "Nov 26 20:00:07 mx postfix/cleanup[11]: AA0002: message-id=<mb.crowded@mail.test>\n"
    "Nov 26 20:00:07 mx postfix/qmgr[12]: AA0002: from=<evil@elsewhere.test>, size=700, nrcpt=1 (queue active)\n"
    "Nov 26 20:00:08 mx postfix/qmgr[12]: AA0001: from=<BOUNCE+C@mail.test>, size=700, nrcpt=1 (queue active)\n"
    /* only a stranger's mail with our Message-ID: not ours */
    "Nov 26 20:00:09 mx postfix/cleanup[11]: BB0001: message-id=<mb.forged@mail.test>\n"
    "Nov 26 20:00:09 mx postfix/qmgr[12]: BB0001: from=<evil@elsewhere.test>, size=700, nrcpt=1 (queue active)\n"
    "garbage without the usual shape\n";

int
main(void)
{
	static const struct { const char *mid, *from; int want; const char *qid; } rows[] = {
		{ "mb.kept@mail.test", "bounce+x@mail.test", 1, "4D5E6F" },
		{ "mb.kept@mail.test", "bounce+other@mail.test", 0, NULL },   /* not our sender */
		{ "mb.aborted@mail.test", "bounce+x@mail.test", 0, NULL },
		{ "mb.second@mail.test", "bounce+z@mail.test", 1, "88BB02" },
		{ "mb.other-qid@mail.test", "bounce+w@mail.test", 0, NULL },
		{ "mb.kept@mail", "bounce+x@mail.test", 0, NULL },
		{ "mb.never@mail.test", "bounce+x@mail.test", 0, NULL },
		{ "mb.crowded@mail.test", "bounce+c@mail.test", 1, "AA0001" },
		{ "mb.forged@mail.test", "bounce+f@mail.test", 0, NULL },
	};
	char path[] = "/tmp/mb-test-relaylog-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	char *qid;

	if (!f || fputs(log_lines, f) < 0 || fclose(f) != 0)
		abort();
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int r = relaylog_find(path, rows[i].mid, rows[i].from, &qid);
		CHECK_IDX(r == rows[i].want, i);
		CHECK_IDX(rows[i].qid ? qid && strcmp(qid, rows[i].qid) == 0 : qid == NULL, i);
		free(qid);
	}
	/* beyond the tail: padding pushes the lines out of the part read */
	if (!(f = fopen(path, "w")))
		abort();
	fputs(log_lines, f);
	for (long n = 0; n < RELAYLOG_TAIL / 64 + 1; n++)
		fputs("Nov 26 20:00:07 mx postfix/anvil[13]: statistics: padding padding pad\n", f);
	fclose(f);
	CHECK(relaylog_find(path, "mb.kept@mail.test", "bounce+x@mail.test", &qid) == 0 && qid == NULL);
	unlink(path);
	CHECK(relaylog_find(path, "mb.kept@mail.test", "bounce+x@mail.test", &qid) == -1 && qid == NULL);
	return test_done("test_relaylog");
}
