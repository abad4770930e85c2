#include "inbound.h"
#include "app.h"
#include "config.h"
#include "contact.h"
#include "engage.h"
#include "engagement.h"
#include "store_engage.h"
#include "jobs.h"
#include "ghl.h"
#include "log.h"
#include "metrics.h"
#include "mime_in.h"
#include "store_inbound.h"
#include "store_threads.h"
#include "store_unsub.h"
#include "thread.h"
#include "unsubscribe.h"
#include "util.h"

#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char *
dedupe_key(const struct inbound_msg *m, const char *raw, size_t len)
{
	unsigned char digest[32];
	const char *end;
	char *hex;
	size_t hlen;

	if (m->message_id && *m->message_id)
		return xstrdup(m->message_id);
	/* no Message-ID: hash the header block, stable across re-reads */
	end = memmem(raw, len, "\r\n\r\n", 4);
	if (!end)
		end = memmem(raw, len, "\n\n", 2);
	hlen = end ? (size_t)(end - raw) : len;
	gnutls_hash_fast(GNUTLS_DIG_SHA256, raw, hlen, digest);
	hex = xmalloc(8 + 64 + 1);
	strcpy(hex, "sha256:");
	hex_encode(digest, 32, hex + 7);
	return hex;
}

#define INBOUND_DSN_EVENTS 16       /* engagement events from one report, at most */

/* dnd_on_hard_bounce: a DSN that failed a recipient with 5.1.x (bad
 * mailbox, bad domain: RFC 3463) sets the contact's Email DND, but only
 * when that recipient is the contact's own email, which the worker checks
 * in HighLevel before it sets anything (a cc or an old address must not
 * silence the contact). */
static void
hard_bounce_dnd(struct app *app, const struct location_config *loc, const struct msgmap *rp,
    const struct inbound_msg *m)
{
	for (size_t i = 0; i < m->n_dsn; i++) {
		const struct dsn_rcpt *d = &m->dsn[i];
		if (!d->recipient || !d->action || strncmp(d->action, "failed", 6) || !d->status ||
		    strncmp(d->status, "5.1.", 4))
			continue;
		if (store_unsub_add(app->store, loc->id, rp->contact_id, rp->ghl_message_id, "hard-bounce", NULL,
		    d->recipient) < 0) {
			log_error("inbound: DSN locationId=%s contactId=%s: the hard bounce's DND is not recorded (store "
			    "error)", loc->id, rp->contact_id);
			return;
		}
		log_info("inbound: DSN locationId=%s contactId=%s %s for %s: Email DND if that is the contact's email",
		    loc->id, rp->contact_id, d->status, d->recipient);
		unsubscribe_wake(app->unsubscriber);
		return;
	}
}

/* A DSN changes a job only when it came to that job's own return path
 * (a token nobody can compute, of this location), and when whatever
 * else it names (ENVID, our header, the original Message-ID) is that same
 * job. Anyone can mail a report naming a messageId; only the message's
 * bounce address says we sent it there. */
static enum inbound_result
inbound_dsn(struct app *app, const struct location_config *loc, const struct inbound_msg *m, const char *key)
{
	/* the message whose return path this came to: bounce+<token>@ the
	 * location's reply domain, in To, Delivered-To or X-Original-To */
	struct msgmap *map = NULL, *rp = thread_by_token(app->store, loc, true, m->all_rcpt_addrs, m->n_all_rcpt);
	const char *job_id = NULL, *claimed = NULL, *refused = NULL;
	enum report_status status = STATUS_NONE;
	const struct dsn_rcpt *decisive = NULL;
	struct engage_add ev[INBOUND_DSN_EVENTS];
	size_t n_ev = 0;
	char *err = NULL;
	int code = 0, r = 0;
	enum inbound_result ret = INBOUND_DONE;

	/* what the report names: ENVID (we send the messageId), our header,
	 * our Message-ID */
	if (m->dsn_envid)
		claimed = m->dsn_envid;
	else if (m->dsn_job)
		claimed = m->dsn_job;
	else if (m->dsn_orig_message_id && store_msgmap_get(app->store, MSGMAP_BY_RFC, loc->id, m->dsn_orig_message_id, &map) == 1)
		claimed = map->ghl_message_id;
	if (!rp)
		refused = "DSN not addressed to a bounce address of this location";
	else if (claimed && strcmp(claimed, rp->ghl_message_id))
		refused = "DSN names another message than its bounce address";
	else
		job_id = rp->ghl_message_id;
	for (size_t i = 0; i < m->n_dsn; i++) {
		const char *a = m->dsn[i].action ? m->dsn[i].action : "";
		if (!strncmp(a, "failed", 6)) {
			status = STATUS_FAILED;
			decisive = &m->dsn[i];
			break;
		}
		if (!strncmp(a, "delivered", 9) || !strncmp(a, "relayed", 7) || !strncmp(a, "expanded", 8)) {
			status = STATUS_DELIVERED;
			decisive = &m->dsn[i];
		}
	}
	for (size_t i = 0; job_id && i < m->n_dsn && n_ev < INBOUND_DSN_EVENTS; i++) {
		enum engage_kind k[2];
		if (m->dsn[i].recipient && engage_on_rcpt(0, m->dsn[i].action, true, k) == 1)
			ev[n_ev++] = (struct engage_add){ engage_name(k[0]), m->dsn[i].recipient };
	}
	if (decisive && decisive->diagnostic) {
		code = atoi(decisive->diagnostic);
		err = xasprintf("%s: %s", decisive->recipient ? decisive->recipient : "?", decisive->diagnostic);
	} else if (decisive) {
		err = xasprintf("%s: %s %s", decisive->recipient ? decisive->recipient : "?", decisive->action,
		    decisive->status ? decisive->status : "");
	}
	if (job_id && status != STATUS_NONE) {
		/* each recipient the report names, for the v3 per-recipient status */
		json_t *patch = json_object();
		char *patch_s;
		for (size_t i = 0; i < m->n_dsn; i++) {
			const struct dsn_rcpt *d = &m->dsn[i];
			const char *text = d->diagnostic ? d->diagnostic : d->status ? d->status : "";
			if (!d->recipient || !d->action)
				continue;
			json_t *t = json_string(text), *one = json_object();
			json_object_set_new(one, "code", json_integer(d->diagnostic ? atoi(d->diagnostic) : 0));
			json_object_set_new(one, "text", t ? t : json_string("(not UTF-8)"));
			json_object_set_new(one, "dsn", json_string(d->action));
			json_object_set_new(patch, d->recipient, one);
		}
		patch_s = json_object_size(patch) ? json_dumps(patch, JSON_COMPACT) : NULL;
		json_decref(patch);
		r = jobs_dsn(app->store, job_id, status, code, status == STATUS_FAILED ? err : NULL,
		    err ? err : job_report_status_name(status), patch_s, ev, n_ev, NULL);
		free(patch_s);
	} else if (job_id && n_ev > 0) {
		/* only delays: no status, but their temporary_fail events */
		r = store_engage_add(app->store, loc->id, job_id, ev, n_ev, 1) < 0 ? -1 : 0;
		if (r == 0)
			engagement_wake(app->engagement);
	}
	if (r == 1) {
		engagement_wake(app->engagement);
		if (loc->dnd_on_hard_bounce && rp && rp->contact_id)
			hard_bounce_dnd(app, loc, rp, m);
	}
	if (r < 0) {
		/* not applied and not recorded: the message is read again later */
		log_error("inbound: DSN locationId=%s messageId=%s: store error; read again later", loc->id, job_id);
		ret = INBOUND_RETRY;
		goto out;
	}
	if (r == 1)
		metrics_inc(M_DSN_APPLIED);
	if (refused)
		log_warn("inbound: DSN locationId=%s naming messageId=%s refused: %s", loc->id, claimed ? claimed : "-",
		    refused);
	else
		log_info("inbound: DSN locationId=%s messageId=%s action=%s applied=%s", loc->id,
		    job_id ? job_id : "-", status != STATUS_NONE ? job_report_status_name(status) : "delayed/none",
		    r == 1 ? "yes" : "no");
	if (store_inbound_record(app->store, loc->id, key, r == 1 ? IN_DSN : IN_SKIPPED, job_id,
	    r == 1 ? NULL : refused ? refused : "DSN for no known sent message (or only a delay)", "DSN", NULL, 0) < 0)
		ret = INBOUND_RETRY;  /* applied again on the re-read: the same status, reported again at worst */
out:
	store_msgmap_free(map);
	store_msgmap_free(rp);
	free(err);
	return ret;
}

static char *
summary_of(const struct inbound_msg *m)
{
	return xasprintf("%s | %s", m->from_addr ? m->from_addr : "?", m->subject ? m->subject : "");
}

/* The HTML with each cid: link (RFC 2392) to an inline image we
 * uploaded pointing at its uploaded URL: the image goes once, as an
 * attachment, and shows where the sender put it. NULL when nothing
 * changed. */
static char *
html_with_uploaded_cids(const struct inbound_msg *m, char *const *url_of)
{
	char *html = NULL;

	if (!m->html || !url_of)
		return NULL;
	for (size_t i = 0; i < m->n_attachments; i++) {
		const char *cid = m->attachment_cids[i], *src;
		char *out = NULL;
		size_t cl, len = 0;
		FILE *f;
		if (!cid || !url_of[i])
			continue;
		cl = strlen(cid);
		src = html ? html : m->html;
		f = open_memstream(&out, &len);
		for (const char *p = src; *p;) {
			const char *e = p + 4 + cl;
			if (!strncasecmp(p, "cid:", 4) && !strncmp(p + 4, cid, cl) &&
			    (*e == '"' || *e == '\'' || *e == ')' || *e == '>' || *e == ' ' || *e == '\0')) {
				fputs(url_of[i], f);
				p = e;
			} else {
				fputc(*p++, f);
			}
		}
		fclose(f);
		free(html);
		html = out;
	}
	if (html && !strcmp(html, m->html)) {
		free(html);
		return NULL;
	}
	return html;
}

static enum inbound_result
inbound_post(struct app *app, const struct location_config *loc, const struct inbound_msg *m,
    const char *key, int64_t version, const char *raw, size_t len, int64_t received_at, int64_t *wait_ms_r)
{
	struct ghl_step s = { .cls = GHL_OK };
	struct msgmap *parent = thread_parent_for_inbound(app->store, loc, m->in_reply_to,
	    m->references, m->n_references, m->all_rcpt_addrs, m->n_all_rcpt);
	char *contact = NULL, *conv = NULL, *notes = NULL, *text = NULL, *summary = summary_of(m), *from = NULL,
	    *alt = NULL, **urls = NULL, **url_of = NULL, *html = NULL;
	size_t n_urls = 0;
	struct ghl_message post;
	struct ghl_posted posted = { 0 };
	struct ghl_result res = { 0 };
	enum inbound_result ret = INBOUND_DONE;
	bool other_sender;

	contact = contact_find(app, loc, m->from_addr, NULL, m->from_name, true, &s);
	if (!contact)
		goto fail;
	/* a reply from someone else than the thread's contact (a Cc'd
	 * colleague's reply-all, a list): HighLevel's conversations are per
	 * contact, so by default it goes to the sender's own conversation,
	 * not threaded under another contact's email (other_sender_replies =
	 * own); "thread" keeps it in the thread's conversation */
	other_sender = parent && parent->contact_id && strcmp(parent->contact_id, contact);
	if (other_sender && !strcmp(loc->other_sender_replies, "thread")) {
		free(contact);
		contact = xstrdup(parent->contact_id);
		other_sender = false;
	}
	if (parent && parent->conversation_id && parent->contact_id && !strcmp(parent->contact_id, contact))
		conv = xstrdup(parent->conversation_id);
	else if (!(conv = contact_conversation_find(app, loc, contact, &s)))
		goto fail;

	notes = xstrdup("");
	/* one file per request: a type HighLevel refuses (415) must not sink
	 * the PDF beside it */
	url_of = xcalloc(m->n_attachments + 1, sizeof(*url_of));
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mime_attachment *a = &m->attachments[i];
		struct ghl_file f = { a->filename, a->content_type, a->data, a->len };
		ghl_upload(app->ghl, loc->id, conv, contact, &f, 1, &res);
		if (res.cls == GHL_OK) {
			size_t n;
			char **got = ghl_uploaded_urls(&res, &n);
			if (n > 0)
				url_of[i] = got[0];   /* borrowed from urls below */
			urls = xrealloc(urls, (n_urls + n + 1) * sizeof(*urls));
			memcpy(urls + n_urls, got, n * sizeof(*got));
			n_urls += n;
			free(got);
		} else if (res.cls == GHL_PERMANENT) {
			/* 413/415: say so in the text, never drop silently */
			char *n2 = xasprintf("%s\n[attachment not accepted by HighLevel: %s (%s)]", notes,
			    m->attachments[i].filename, res.error ? res.error : "refused");
			free(notes);
			notes = n2;
		} else {
			ghl_step_from(&s, &res, "upload");
			goto fail;
		}
		ghl_result_clear(&res);
	}
	text = inbound_message_text(m, notes);
	html = html_with_uploaded_cids(m, url_of);
	from = m->from_name ? xasprintf("%s <%s>", m->from_name, m->from_addr) : xstrdup(m->from_addr);
	alt = m->message_id ? xasprintf("<%s>", m->message_id) : NULL;
	{
		struct ghl_message msg = {
			.type = loc->provider_mode == PROVIDER_CUSTOM ? GHL_MSG_CUSTOM : GHL_MSG_EMAIL,
			.contact_id = contact, .conversation_id = conv, .provider_id = loc->provider_id,
			.date_ms = m->date_ms ? m->date_ms : now_ms(), .message = text, .subject = m->subject,
			.html = html ? html : m->html, .email_from = from, .email_to = m->n_to > 0 ? m->to_addrs[0] : NULL,
			.email_cc = (const char *const *)m->cc_addrs, .n_cc = m->n_cc, .alt_id = alt,
			.attachments = (const char *const *)urls, .n_attachments = n_urls,
		};
		/* default provider: thread with HighLevel's email id of the parent */
		if (loc->provider_mode == PROVIDER_DEFAULT && parent && !other_sender)
			msg.email_message_id = parent->email_message_id ? parent->email_message_id : parent->ghl_message_id;
		post = msg;
	}

	/* the intent is on disk before the call: after a crash right after
	 * HighLevel's answer, the re-read posts again (logged), never loses.
	 * Taken only if nobody wrote the record since we read it: two copies
	 * of one message (spooled twice across a crash) never both post */
	switch (store_inbound_take(app->store, loc->id, key, version, summary)) {
	case 1:
		break;
	case 0:
		log_info("inbound: locationId=%s key=%s is being handled by another reader: this copy is dropped",
		    loc->id, key);
		goto out;
	default:
		s.cls = GHL_RETRY;
		s.error = xstrdup("the store cannot record the intent to post: not posted");
		goto fail;
	}
	if (ghl_message_post(app->ghl, loc->id, &post, &posted, &res) != GHL_OK) {
		ghl_step_from(&s, &res, "post inbound");
		goto fail;
	}
	{
		const char *ghl_id = posted.message_id;
		char *refs = NULL;
		struct msgmap mm = { 0 };
		if (m->message_id) {
			mm.rfc_message_id = m->message_id;
			mm.location_id = loc->id;
			mm.ghl_message_id = (char *)ghl_id;
			mm.email_message_id = posted.email_message_id ? posted.email_message_id :
			    parent && !other_sender ? parent->email_message_id : NULL;
			mm.alt_id = m->message_id;
			mm.conversation_id = posted.conversation_id ? posted.conversation_id : conv;
			mm.contact_id = contact;
			if (parent)
				refs = parent->references && *parent->references ?
				    xasprintf("%s <%s>", parent->references, parent->rfc_message_id) :
				    xasprintf("<%s>", parent->rfc_message_id);
			mm.references = refs;
		}
		{
			/* trace events under the thread's message (if any) and under the reply */
			char *ev = xasprintf("reply from %s <%s> posted as %s", m->from_addr, key, ghl_id);
			int r;
			/* HighLevel has it: a record that fails now would have the
			 * re-read post it twice, so the store gets a few tries */
			for (int i = 0; (r = store_inbound_posted(app->store, loc->id, key, ghl_id, summary,
			    m->message_id ? &mm : NULL, parent ? parent->ghl_message_id : NULL, ev, m->from_addr)) < 0 &&
			    i < 3; i++)
				sleep_ms(100LL << (2 * i));
			free(ev);
			if (r < 0) {
				log_error("inbound: locationId=%s key=%s posted as %s, but the store cannot record it: "
				    "left unread (the next read posts it again)", loc->id, key, ghl_id);
				ret = INBOUND_RETRY;
			}
		}
		metrics_inc(M_INBOUND_POSTED);
		if (parent)
			engagement_wake(app->engagement);
		if (received_at > 0)
			metrics_observe(H_REPLY_TO_POST, (now_ms() - received_at) * 1000);
		log_info("inbound: posted locationId=%s messageId=%s thread=%s attachments=%zu traceId=%s", loc->id,
		    ghl_id, parent ? "reply" : "new", n_urls, res.trace_id ? res.trace_id : "-");
		free(refs);
	}
	goto out;

fail:
	if (s.cls == GHL_PERMANENT) {
		log_warn("inbound: failed locationId=%s key=%s: %s", loc->id, key, s.error);
		metrics_inc(M_INBOUND_FAILED);
		metrics_location_failure(loc->id, LF_INBOUND);
		/* not recorded: read again later, and refused again then */
		if (store_inbound_record(app->store, loc->id, key, IN_FAILED, NULL, s.error, summary, raw, len) < 0)
			ret = INBOUND_RETRY;
	} else if (s.wait_ms > 0) {
		/* a burst for one location: HighLevel's window, kept by our own
		 * limiter, is full. Not a failure: nothing was sent, nothing is
		 * recorded, and the spool tries again when the window has room
		 * (its backoff would wait minutes) */
		log_debug("inbound: locationId=%s key=%s waits %lld ms for the HighLevel window (%s)", loc->id, key,
		    (long long)s.wait_ms, s.error ? s.error : "?");
		if (wait_ms_r)
			*wait_ms_r = s.wait_ms;
		ret = INBOUND_WAIT;
	} else {
		log_warn("inbound: will retry locationId=%s key=%s: %s", loc->id, key, s.error ? s.error : "?");
		/* HighLevel answered (or nobody did before the post): not posted */
		/* for `inbound list` only: the RETRY return leaves it unread either way */
		(void)store_inbound_record(app->store, loc->id, key, IN_RETRY, NULL, s.error, summary, NULL, 0);
		metrics_inc(M_INBOUND_RETRY);
		ret = INBOUND_RETRY;
	}
out:
	ghl_result_clear(&res);
	ghl_posted_clear(&posted);
	for (size_t i = 0; i < n_urls; i++)
		free(urls[i]);
	free(urls);
	free(url_of);
	free(html);
	free(from);
	free(alt);
	store_msgmap_free(parent);
	free(contact);
	free(conv);
	free(notes);
	free(text);
	free(summary);
	free(s.error);
	return ret;
}

char *
inbound_message_text(const struct inbound_msg *m, const char *upload_notes)
{
	char *notes = xstrdup(upload_notes ? upload_notes : ""), *text;

	for (size_t i = 0; i < m->n_dropped; i++) {
		char *n2 = xasprintf("%s\n[attachment too large to forward: %s]", notes, m->dropped[i]);
		free(notes);
		notes = n2;
	}
	for (size_t i = 0; i < m->n_notes; i++) {
		char *n2 = xasprintf("%s\n[%s]", notes, m->notes[i]);
		free(notes);
		notes = n2;
	}
	text = xasprintf("%s%s%s", m->auto_reply ? "(auto-reply) " : "", m->reply_text ? m->reply_text : "", notes);
	free(notes);
	return text;
}

/* Not posted, on purpose: recorded with why (inbound list), and logged.
 * RETRY only when the record itself cannot be written. */
static enum inbound_result
inbound_skip(struct app *app, const struct location_config *loc, const char *key, const struct inbound_msg *m,
    const char *why)
{
	char *summary = summary_of(m);
	int r = store_inbound_record(app->store, loc->id, key, IN_SKIPPED, NULL, why, summary, NULL, 0);

	metrics_inc(M_INBOUND_SKIPPED);
	log_info("inbound: locationId=%s key=%s not posted: %s", loc->id, key, why);
	free(summary);
	return r < 0 ? INBOUND_RETRY : INBOUND_DONE;
}

/* A complaint (ARF: a mailbox provider's feedback loop, Yahoo CFL,
 * Microsoft JMRP): never posted. When the returned message is one we sent
 * for this location and carries its own reply token (so whoever sent the
 * report had the message), the contact's Email DND is set as for an
 * unsubscribe, and the message's "complained" event is reported. */
static enum inbound_result
inbound_arf(struct app *app, const struct location_config *loc, const struct inbound_msg *m, const char *key)
{
	struct msgmap *map = NULL;
	const char *why;
	char *addr = NULL;
	bool token_ok = false;

	if (m->orig_reply_to) {
		const char *lt = strrchr(m->orig_reply_to, '<');
		addr = lt ? xstrdup(lt + 1) : xstrdup(m->orig_reply_to);
		addr[strcspn(addr, "> \t\r\n")] = '\0';
	}
	if (!m->dsn_orig_message_id ||
	    store_msgmap_get(app->store, MSGMAP_BY_RFC, loc->id, m->dsn_orig_message_id, &map) != 1) {
		why = "complaint (ARF) about no message this location sent";
	} else {
		char *t = addr ? thread_token_of(loc, false, NULL, addr) : NULL;
		token_ok = t && map->reply_token && secret_equal(t, map->reply_token);
		free(t);
		if (!token_ok || !map->contact_id)
			why = "complaint (ARF) whose returned message does not carry its reply address";
		else if (store_unsub_add(app->store, loc->id, map->contact_id, map->ghl_message_id, "complaint",
		    engage_name(ENG_COMPLAINED), NULL) < 0)
			why = NULL;
		else
			why = "complaint (ARF): the contact's Email DND is set";
	}
	free(addr);
	if (!why) {
		store_msgmap_free(map);
		return INBOUND_RETRY;     /* the request was not recorded: read again */
	}
	if (token_ok) {
		log_warn("inbound: locationId=%s complaint about messageId=%s from contactId=%s", loc->id,
		    map->ghl_message_id, map->contact_id);
		unsubscribe_wake(app->unsubscriber);
		engagement_wake(app->engagement);
	}
	store_msgmap_free(map);
	return inbound_skip(app, loc, key, m, why);
}

static enum inbound_result
inbound_handle_once(struct app *app, const struct location_config *loc, const char *raw, size_t len, bool retry,
    int64_t received_at, int64_t *wait_ms_r)
{
	struct inbound_msg *m;
	char *key;
	enum inbound_state state;
	int64_t version = 0;
	enum inbound_action act;
	const char *refused = NULL;
	enum inbound_result r = INBOUND_DONE;
	int u;

	if (len > INBOUND_MAX_MESSAGE) {
		log_warn("inbound: locationId=%s message of %zu bytes skipped (limit %d)", loc->id, len, INBOUND_MAX_MESSAGE);
		return INBOUND_DONE;
	}
	m = mime_in_parse(raw, len, INBOUND_MAX_ATTACH, &refused);
	if (!m && refused) {
		/* past a structural limit: recorded as failed, with why, once */
		struct inbound_msg none = { 0 };
		key = dedupe_key(&none, raw, len);
		metrics_inc(M_INBOUND_FAILED);
		metrics_location_failure(loc->id, LF_INBOUND);
		log_warn("inbound: locationId=%s message refused: %s", loc->id, refused);
		if (store_inbound_record(app->store, loc->id, key, IN_FAILED, NULL, refused, NULL, NULL, 0) < 0)
			r = INBOUND_RETRY;
		free(key);
		return r;
	}
	if (!m) {
		log_warn("inbound: locationId=%s unparsable message skipped", loc->id);
		return INBOUND_DONE;
	}
	key = dedupe_key(m, raw, len);
	if (store_inbound_state(app->store, loc->id, key, &state, &version) < 0) {
		r = INBOUND_RETRY;
	} else if ((act = inbound_on_read(state, retry)) == IN_ACT_NONE) {
		log_debug("inbound: locationId=%s key=%s already %s", loc->id, key, inbound_state_name(state));
	} else if (m->is_dsn) {
		r = inbound_dsn(app, loc, m, key);
	} else if (m->is_arf) {
		r = inbound_arf(app, loc, m, key);
	} else if ((u = unsubscribe_by_mail(app, loc, m->all_rcpt_addrs, m->n_all_rcpt)) != 0) {
		/* a mail to the unsubscribe address: a request, never a reply */
		r = u < 0 ? INBOUND_RETRY : inbound_skip(app, loc, key, m, "unsubscribe request (mailto)");
	} else if (!m->from_addr) {
		r = inbound_skip(app, loc, key, m, "no From address");
	} else if (loc->from_addr && !strcasecmp(m->from_addr, loc->from_addr)) {
		/* our own copy (e.g. Sent folder or a Bcc to ourselves): never a reply */
		r = inbound_skip(app, loc, key, m, "from our own address");
	} else if ((m->auto_reply || m->null_sender) && !strcmp(loc->auto_replies, "skip")) {
		r = inbound_skip(app, loc, key, m, "auto-reply");
	} else {
		if (act == IN_ACT_HANDLE_AGAIN)
			log_warn("inbound: locationId=%s key=%s was being posted when mailbridge stopped; "
			    "posting again (HighLevel may show it twice)", loc->id, key);
		r = inbound_post(app, loc, m, key, version, raw, len, received_at, wait_ms_r);
	}
	free(key);
	mime_in_free(m);
	return r;
}

enum inbound_result
inbound_handle(struct app *app, const struct location_config *loc, const char *raw, size_t len,
    int64_t received_at, int64_t *wait_ms_r)
{
	return inbound_handle_once(app, loc, raw, len, false, received_at, wait_ms_r);
}

enum inbound_result
inbound_retry(struct app *app, const struct location_config *loc, const char *key)
{
	char *raw = NULL;
	size_t len = 0;
	enum inbound_result r;

	if (store_inbound_raw(app->store, loc->id, key, &raw, &len) != 1)
		return INBOUND_RETRY;
	r = inbound_handle_once(app, loc, raw, len, true, 0, NULL);
	free(raw);
	return r;
}
