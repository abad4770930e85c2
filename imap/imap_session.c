#include "imap_session.h"
#include "log.h"
#include "netstream.h"
#include "util.h"

#include <libetpan/libetpan.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IMAP_TIMEOUT_S 60

/* libetpan reports a good connect as 0, 1 or 2 (LIBRARIES.md B.1) */
static bool
imap_ok(int r)
{
	return r == MAILIMAP_NO_ERROR || r == MAILIMAP_NO_ERROR_AUTHENTICATED ||
	    r == MAILIMAP_NO_ERROR_NON_AUTHENTICATED;
}

static char *
imap_error(mailimap *imap, const char *what, int r)
{
	const char *resp = imap && imap->imap_response ? imap->imap_response : "";
	return xasprintf("%s failed (libetpan %d)%s%s", what, r, *resp ? ": " : "", resp);
}

static int
cmp_uid(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void
drop_window(struct imap_session *s)
{
	free(s->window);
	s->window = NULL;
	s->n_window = 0;
}

/* After a UIDVALIDITY change the UIDs up to rescan_upto are the old mail
 * renumbered. Only what arrived within reread_days is read again (the
 * owner's dedupe window: [store] keep_days); older mail is
 * history, as on a first watch. The window is the UIDs a SINCE search
 * returns (UID order need not be date order: COPY keeps INTERNALDATE).
 * A server refusing the search gets everything read again, with dedupe.
 * -1 if the connection failed. */
static int
load_window(struct imap_session *s, char **error_r)
{
	mailimap *imap = s->imap;
	/* SINCE compares whole days in the server's time zone: two days short
	 * of the window, every message it returns is still deduped */
	time_t t = time(NULL) - (time_t)(s->mb->reread_days - 2) * 86400;
	struct mailimap_search_key *key;
	clist *result = NULL;
	struct tm tm;
	size_t n = 0;
	int r;

	gmtime_r(&t, &tm);
	key = mailimap_search_key_new_since(mailimap_date_new(tm.tm_mday, tm.tm_mon + 1, tm.tm_year + 1900));
	r = mailimap_uid_search(imap, NULL, key, &result);
	mailimap_search_key_free(key);
	if (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_PARSE) {
		*error_r = imap_error(imap, "UID SEARCH SINCE", r);
		return -1;
	}
	drop_window(s);
	s->have_window = true;
	if (r != MAILIMAP_NO_ERROR) {
		log_warn("imap: locationId=%s UID SEARCH SINCE refused (libetpan %d): re-reading every message",
		    s->mb->id, r);
		s->window_all = true;
		return 0;
	}
	s->window_all = false;
	s->window = xmalloc((clist_count(result) + 1) * sizeof(*s->window));
	for (clistiter *it = clist_begin(result); it; it = clist_next(it))
		s->window[n++] = *(uint32_t *)clist_content(it);
	mailimap_search_result_free(result);
	qsort(s->window, n, sizeof(*s->window), cmp_uid);
	s->n_window = n;
	return 0;
}

static bool
in_window(const struct imap_session *s, uint32_t uid)
{
	return s->window_all || bsearch(&uid, s->window, s->n_window, sizeof(*s->window), cmp_uid) != NULL;
}

/* 0, or -1 with *error_r: the mark is not durable, stop here */
static int
mark(struct imap_session *s, char **error_r)
{
	struct imap_mark m = { s->uidvalidity, s->last_uid, s->rescan_upto };
	if (s->sink->mark_put(s->sink->ctx, s->mb->id, &m) < 0) {
		*error_r = xstrdup("cannot record how far the mailbox was read");
		return -1;
	}
	return 0;
}

void
imap_session_close(struct imap_session *s, bool polite)
{
	mailimap *imap = s->imap;
	if (!imap)
		return;
	if (polite && !s->idling && imap->imap_stream)
		mailimap_logout(imap);
	/* mailimap_free would LOGOUT on a dead or idling stream and block */
	if (imap->imap_stream) {
		mailstream_close(imap->imap_stream);
		imap->imap_stream = NULL;
	}
	mailimap_free(imap);
	s->imap = NULL;
	s->idling = false;
	drop_window(s);
	s->have_window = false;
}

/* libetpan 1.9.4 reads the capability list it keeps without NULL checks:
 * a server that never lists capabilities, or sends an empty
 * "[CAPABILITY ]", crashed the process in mailimap_has_idle() (found by
 * fuzz_imap). Keep an empty list there instead. */
static void
capability_guard(mailimap *imap)
{
	struct mailimap_connection_info *ci = imap->imap_connection_info;

	if (!ci)
		return;
	if (!ci->imap_capability) {
		clist *none = clist_new();
		if (none && !(ci->imap_capability = mailimap_capability_data_new(none)))
			clist_free(none);
	} else if (!ci->imap_capability->cap_list) {
		ci->imap_capability->cap_list = clist_new();
	}
}

int
imap_session_connect(struct imap_session *s, char **error_r)
{
	const struct imap_mailbox *c = s->mb;
	mailimap *imap = mailimap_new(0, NULL);
	struct imap_mark cp;
	uint32_t uidnext;
	int r, have;

	struct netstream_tls tls = { c->tls_verify, c->ca_file };
	mailstream *stream;

	s->imap = imap;
	mailimap_set_timeout(imap, IMAP_TIMEOUT_S);
	/* our stream: poll() not select(), certificates checked in the
	 * handshake, small buffers (netstream.h) */
	stream = netstream_connect(c->host, (int)c->port, c->tls == TLS_MODE_IMPLICIT ? &tls : NULL,
	    IMAP_TIMEOUT_S, NETSTREAM_BUFFER_SMALL, error_r);
	if (!stream)
		goto fail;
	netstream_imap_responses(stream);
	r = mailimap_connect(imap, stream);
	if (!imap_ok(r)) {
		*error_r = imap_error(imap, "connect", r);
		goto fail;
	}
	if (c->tls == TLS_MODE_STARTTLS) {
		r = mailimap_starttls(imap);
		if (r != MAILIMAP_NO_ERROR) {
			*error_r = imap_error(imap, "STARTTLS", r);
			goto fail;
		}
		if (netstream_starttls(imap->imap_stream, c->host, &tls, error_r) < 0)
			goto fail;
	}
	r = mailimap_login(imap, c->user, c->password);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(imap, "LOGIN", r);
		goto fail;
	}
	/* servers often announce IDLE only after login. A plain command, not
	 * mailimap_capability(), which copies the list the reply just set
	 * without a NULL check: '[CAPABILITY ]' in its own reply crashed it */
	mailimap_custom_command(imap, "CAPABILITY");
	capability_guard(imap);
	/* imap_idle = no: poll, for servers whose IDLE misbehaves */
	s->has_idle = s->mb->idle && mailimap_has_idle(imap) != 0;
	r = mailimap_select(imap, s->mb->folder);
	if (r != MAILIMAP_NO_ERROR || !imap->imap_selection_info) {
		*error_r = imap_error(imap, "SELECT", r);
		goto fail;
	}
	s->uidvalidity = imap->imap_selection_info->sel_uidvalidity;
	have = s->sink->mark_get(s->sink->ctx, s->mb->id, &cp);
	if (have < 0) {
		*error_r = xstrdup("cannot read how far the mailbox was read");
		goto fail;
	}
	uidnext = imap->imap_selection_info->sel_uidnext;
	if (have == 0) {
		/* first watch of this mailbox: what is already there is history */
		s->last_uid = uidnext ? uidnext - 1 : 0;
		s->rescan_upto = 0;
		if (mark(s, error_r) < 0)
			goto fail;
		log_info("imap: locationId=%s first watch of %s, starting after UID %u", s->mb->id,
		    s->mb->folder, s->last_uid);
	} else if (cp.uidvalidity != s->uidvalidity) {
		/* UIDs were renumbered: read the mailbox again, within the window
		 * the dedupe table (by Message-ID) still vouches for */
		s->last_uid = 0;
		s->rescan_upto = uidnext ? uidnext - 1 : UINT32_MAX;
		if (mark(s, error_r) < 0)
			goto fail;
		log_warn("imap: locationId=%s UIDVALIDITY changed %u -> %u, re-reading UIDs up to %u that "
		    "arrived within keep_days, with dedupe", s->mb->id, cp.uidvalidity, s->uidvalidity,
		    s->rescan_upto);
	} else {
		s->last_uid = cp.last_uid;
		s->rescan_upto = cp.rescan_upto;
	}
	log_info("imap: locationId=%s connected %s:%ld idle=%s", s->mb->id, c->host, c->port,
	    s->has_idle ? "yes" : "no");
	return 0;
fail:
	imap_session_close(s, false);
	return -1;
}

/* UIDs above last_uid, ascending. Caller frees. -1 on error. */
static int
list_new_uids(struct imap_session *s, uint32_t **uids_r, size_t *n_r, char **error_r)
{
	mailimap *imap = s->imap;
	struct mailimap_set *set = mailimap_set_new_interval(s->last_uid + 1, 0);
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	clist *result = NULL;
	clistiter *it;
	size_t n = 0, cap = 16;
	uint32_t *uids = xmalloc(cap * sizeof(*uids));
	int r;

	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
	r = mailimap_uid_fetch(imap, set, ft, &result);
	mailimap_set_free(set);
	mailimap_fetch_type_free(ft);
	if (r != MAILIMAP_NO_ERROR) {
		free(uids);
		*error_r = imap_error(imap, "UID FETCH", r);
		return -1;
	}
	for (it = clist_begin(result); it; it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
		for (clistiter *i2 = clist_begin(att->att_list); i2; i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
			    item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID) {
				uint32_t uid = item->att_data.att_static->att_data.att_uid;
				/* "n:*" always returns the last message, even below n */
				if (uid <= s->last_uid)
					continue;
				if (n == cap)
					uids = xrealloc(uids, (cap *= 2) * sizeof(*uids));
				uids[n++] = uid;
			}
		}
	}
	mailimap_fetch_list_free(result);
	/* servers answer in sequence order, which is UID order; sort anyway */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && uids[j - 1] > uids[j]; j--) {
			uint32_t t = uids[j];
			uids[j] = uids[j - 1];
			uids[j - 1] = t;
		}
	*uids_r = uids;
	*n_r = n;
	return 0;
}

/* The whole message (BODY.PEEK[]: does not set \Seen). 1 ok, 0 gone, -1 error. */
static int
fetch_body(struct imap_session *s, uint32_t uid, char **raw_r, size_t *len_r, char **error_r)
{
	mailimap *imap = s->imap;
	struct mailimap_set *set = mailimap_set_new_single(uid);
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	clist *result = NULL;
	int r, found = 0;

	mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_body_peek_section(mailimap_section_new(NULL)));
	r = mailimap_uid_fetch(imap, set, ft, &result);
	mailimap_set_free(set);
	mailimap_fetch_type_free(ft);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(imap, "UID FETCH BODY", r);
		return -1;
	}
	for (clistiter *it = clist_begin(result); it && !found; it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
		for (clistiter *i2 = clist_begin(att->att_list); i2; i2 = clist_next(i2)) {
			struct mailimap_msg_att_item *item = clist_content(i2);
			if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
			    item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_BODY_SECTION) {
				struct mailimap_msg_att_body_section *b = item->att_data.att_static->att_data.att_body_section;
				*len_r = b->sec_length;
				*raw_r = xmalloc(b->sec_length + 1);
				if (b->sec_body_part)
					memcpy(*raw_r, b->sec_body_part, b->sec_length);
				(*raw_r)[b->sec_length] = '\0';
				found = 1;
				break;
			}
		}
	}
	mailimap_fetch_list_free(result);
	return found;
}

/* What the location wants done with a processed message. */
static int
after_processing(struct imap_session *s, uint32_t uid, char **error_r)
{
	const char *after = s->mb->after;
	struct mailimap_set *set;
	int r = MAILIMAP_NO_ERROR;

	if (!strcmp(after, "none"))
		return 0;
	set = mailimap_set_new_single(uid);
	if (!strcmp(after, "seen")) {
		struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
		struct mailimap_store_att_flags *sa;
		mailimap_flag_list_add(fl, mailimap_flag_new_seen());
		sa = mailimap_store_att_flags_new_add_flags_silent(fl);
		r = mailimap_uid_store(s->imap, set, sa);
		mailimap_store_att_flags_free(sa);
	} else {
		r = mailimap_uid_move(s->imap, set, after + 5);
	}
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(s->imap, !strcmp(after, "seen") ? "UID STORE" : "UID MOVE", r);
		return -1;
	}
	return 0;
}

int
imap_session_catchup(struct imap_session *s, char **error_r)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	int ret = 0;

	s->exists_seen = ((mailimap *)s->imap)->imap_selection_info->sel_exists;
	if (s->rescan_upto && !s->have_window && load_window(s, error_r) < 0)
		return -1;
	if (list_new_uids(s, &uids, &n, error_r) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char *raw = NULL;
		size_t len = 0;
		int r;
		if (uids[i] <= s->rescan_upto && !in_window(s, uids[i])) {
			/* renumbered mail older than the dedupe table's memory */
			log_debug("imap: locationId=%s UID %u predates the re-read window: history", s->mb->id, uids[i]);
			s->last_uid = uids[i];
			if (mark(s, error_r) < 0) {
				ret = -1;
				break;
			}
			continue;
		}
		r = fetch_body(s, uids[i], &raw, &len, error_r);
		if (r < 0) {
			ret = -1;
			break;
		}
		if (r == 1 && s->sink->deliver(s->sink->ctx, s->mb->id, raw, len) == IMAP_RETRY) {
			/* not recorded: stays above the mark, read again later */
			free(raw);
			ret = 1;
			break;
		}
		free(raw);
		/* recorded by the sink first, then flagged, then marked: a crash
		 * in between re-reads it and the sink's dedupe stops a repost. A
		 * mark that cannot be written stops here: the next connection
		 * reads from the last durable one */
		if (r == 1 && after_processing(s, uids[i], error_r) < 0) {
			ret = -1;
			break;
		}
		s->last_uid = uids[i];
		if (mark(s, error_r) < 0) {
			ret = -1;
			break;
		}
	}
	free(uids);
	/* every UID present was handled: the renumbered ones are all behind us */
	if (ret == 0 && s->rescan_upto) {
		log_info("imap: locationId=%s re-read after the UIDVALIDITY change done", s->mb->id);
		s->rescan_upto = 0;
		if (mark(s, error_r) < 0)
			ret = -1;
		drop_window(s);     /* an idle watcher keeps no more than it needs */
	}
	return ret;
}

int
imap_session_idle_start(struct imap_session *s, char **error_r)
{
	int r = mailimap_idle(s->imap);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(s->imap, "IDLE", r);
		return -1;
	}
	s->idling = true;
	return mailimap_idle_get_fd(s->imap);
}

bool
imap_session_pending(const struct imap_session *s)
{
	mailimap *imap = s->imap;
	return imap && imap->imap_selection_info && imap->imap_selection_info->sel_exists != s->exists_seen;
}

bool
imap_session_buffered(const struct imap_session *s)
{
	mailimap *imap = s->imap;
	/* libetpan's buffer, or TLS records GnuTLS already decrypted */
	return imap && imap->imap_stream && netstream_pending(imap->imap_stream);
}

int
imap_session_idle_done(struct imap_session *s, char **error_r)
{
	int r;
	if (!s->idling)
		return 0;
	s->idling = false;
	r = mailimap_idle_done(s->imap);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(s->imap, "DONE", r);
		return -1;
	}
	return 0;
}

int
imap_session_noop(struct imap_session *s, char **error_r)
{
	int r = mailimap_noop(s->imap);
	if (r != MAILIMAP_NO_ERROR) {
		*error_r = imap_error(s->imap, "NOOP", r);
		return -1;
	}
	return 0;
}
