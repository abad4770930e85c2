#include "relaylog.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int
relaylog_find(const char *path, const char *message_id, char **queue_id_r)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *candidate = NULL, *committed = NULL;
	size_t cap = 0, idlen = strlen(message_id);
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
		if (!split_line(line, &qid, &rest))
			continue;
		if (!strncmp(rest, "message-id=<", 12) && !strncmp(rest + 12, message_id, idlen) &&
		    rest[12 + idlen] == '>') {
			free(candidate);
			candidate = xstrdup(qid);
		} else if (candidate && !strncmp(rest, "from=<", 6) && !strcmp(qid, candidate)) {
			/* kept: the latest committed transaction wins */
			free(committed);
			committed = candidate;
			candidate = NULL;
		}
	}
	free(line);
	free(candidate);
	fclose(f);
	*queue_id_r = committed;
	return committed != NULL;
}
