/* inbound_fsm: a received message's state (see inbound_fsm.h). */
#include <string.h>

#include "inbound_fsm.h"

static const struct {
	const char *name;
	bool final;                /* ended: a re-read does nothing */
} states[IN_STATE_N] = {
	[IN_NEW] = { NULL, false },
	[IN_POSTING] = { "posting", false },
	[IN_POSTED] = { "posted", true },
	[IN_SKIPPED] = { "skipped", true },
	[IN_DSN] = { "dsn", true },
	[IN_FAILED] = { "failed", true },
	[IN_RETRY] = { "retry", false },
};

const char *
inbound_state_name(enum inbound_state s)
{
	return (unsigned)s < IN_STATE_N ? states[s].name : NULL;
}

int
inbound_state_parse(const char *name)
{
	if (!name)
		return IN_NEW;
	for (int i = 0; i < IN_STATE_N; i++)
		if (states[i].name && !strcmp(states[i].name, name))
			return i;
	return -1;
}

bool
inbound_is_final(enum inbound_state s)
{
	return (unsigned)s < IN_STATE_N && states[s].final;
}

enum inbound_action
inbound_on_read(enum inbound_state s, bool operator)
{
	if (s == IN_FAILED && operator)
		return IN_ACT_HANDLE;
	if (inbound_is_final(s))
		return IN_ACT_NONE;
	return s == IN_POSTING ? IN_ACT_HANDLE_AGAIN : IN_ACT_HANDLE;
}
