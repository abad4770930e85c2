#include "relaylog.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* "... postfix/cleanup[123]: 4F2A1C0D3: message-id=<x@y>": the queue id
 * after the first "]: " and what follows it, or false for other lines
 * (warnings, "connect from", ...). */
static bool
split_line(char *line, const char **qid_r, const char **rest_r)
{
	char *p = strstr(line, "]: "), *q;

	if (!p)
		return false;
	p += 3;
	for (q = p; (*q >= '0' && *q <= '9') || (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z'); q++)
		;
	if (q == p || q[0] != ':' || q[1] != ' ')
		return false;
	*q = '\0';
	*qid_r = p;
	*rest_r = q + 2;
	return true;
}

/* Queue ids whose cleanup line named our Message-ID, newest last: another
 * message carrying the same Message-ID (anyone can write one) may come
 * between ours and its qmgr line. */
#define RELAYLOG_CANDIDATES 8

struct candidates {
	char *qid[RELAYLOG_CANDIDATES];
	size_t n;
};

static void
candidates_add(struct candidates *c, const char *qid)
{
	if (c->n == RELAYLOG_CANDIDATES) {
		free(c->qid[0]);
		memmove(c->qid, c->qid + 1, (RELAYLOG_CANDIDATES - 1) * sizeof(c->qid[0]));
		c->n--;
	}
	c->qid[c->n++] = xstrdup(qid);
}

/* Takes the candidate out (the caller owns it), or NULL. */
static char *
candidates_take(struct candidates *c, const char *qid)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->qid[i], qid)) {
			char *q = c->qid[i];
			memmove(c->qid + i, c->qid + i + 1, (c->n - i - 1) * sizeof(c->qid[0]));
			c->n--;
			return q;
		}
	return NULL;
}

/* "from=<sender>," with sender ours (case aside: a relay may fold it) */
static bool
from_is(const char *rest, const char *sender, size_t slen)
{
	return !strncmp(rest, "from=<", 6) && !strncasecmp(rest + 6, sender, slen) && rest[6 + slen] == '>';
}

int
relaylog_find(const char *path, const char *message_id, const char *envelope_from, char **queue_id_r)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *committed = NULL;
	struct candidates cand = { { NULL }, 0 };
	size_t cap = 0, idlen = strlen(message_id), slen = strlen(envelope_from);
	struct stat sb;
	ssize_t len;

	*queue_id_r = NULL;
	if (!f)
		return -1;
	if (fstat(fileno(f), &sb) == 0 && sb.st_size > RELAYLOG_TAIL) {
		/* start at a line boundary inside the tail */
		if (fseek(f, (long)(sb.st_size - RELAYLOG_TAIL), SEEK_SET) < 0 || getline(&line, &cap, f) < 0) {
			int e = errno;
			free(line);
			fclose(f);
			errno = e;
			return -1;
		}
	}
	while ((len = getline(&line, &cap, f)) > 0) {
		const char *qid, *rest;
		char *taken;
		if (!split_line(line, &qid, &rest))
			continue;
		if (!strncmp(rest, "message-id=<", 12) && !strncmp(rest + 12, message_id, idlen) &&
		    rest[12 + idlen] == '>') {
			candidates_add(&cand, qid);
		} else if (from_is(rest, envelope_from, slen) && (taken = candidates_take(&cand, qid)) != NULL) {
			/* kept, and submitted with our envelope sender: ours. The
			 * latest committed transaction wins */
			free(committed);
			committed = taken;
		}
	}
	free(line);
	for (size_t i = 0; i < cand.n; i++)
		free(cand.qid[i]);
	fclose(f);
	*queue_id_r = committed;
	return committed != NULL;
}
