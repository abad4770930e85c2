#include "thread.h"
#include "config.h"
#include "store_threads.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *
thread_token_make(const unsigned char key[32], const char *location_id, const char *message_id)
{
	unsigned char digest[32];
	char *in = xasprintf("%s/%s", location_id, message_id);
	char *hex = xmalloc(17);

	gnutls_hmac_fast(GNUTLS_MAC_SHA256, key, 32, in, strlen(in), digest);
	hex_encode(digest, 8, hex);
	free(in);
	return hex;
}

/* A location's forms for replies (bounce false) or DSNs: its mailbox's,
 * then the older reply+/bounce+ one at reply_domain. Returns how many. */
static size_t
thread_forms(const struct location_config *loc, bool bounce, struct thread_form out[2])
{
	const struct plus_box *box = bounce ? &loc->return_box : &loc->reply_box;
	const char *old = bounce ? THREAD_BOUNCE : THREAD_REPLY;
	size_t n = 0;

	if (box->local)
		out[n++] = (struct thread_form){ box->local, box->tag, box->domain };
	if (loc->reply_domain && !(box->local && !strcasecmp(box->local, old) && !*box->tag &&
	    !strcasecmp(box->domain, loc->reply_domain)))
		out[n++] = (struct thread_form){ old, "", loc->reply_domain };
	return n;
}

char *
thread_reply_address(const struct location_config *loc, const char *token)
{
	return xasprintf("%s+%s%s@%s", loc->reply_box.local, loc->reply_box.tag, token, loc->reply_box.domain);
}

char *
thread_return_address(const struct location_config *loc, const char *token)
{
	return xasprintf("%s+%s%s@%s", loc->return_box.local, loc->return_box.tag, token, loc->return_box.domain);
}

char *
thread_token_parse(const char *addr, const struct thread_form *form)
{
	size_t ll = strlen(form->local), tl = strlen(form->tag);
	const char *at = addr ? strrchr(addr, '@') : NULL;
	char *token;

	if (!at || !form->domain || strncasecmp(addr, form->local, ll) || addr[ll] != '+' ||
	    strcasecmp(at + 1, form->domain) || (size_t)(at - addr) <= ll + 1 + tl ||
	    strncasecmp(addr + ll + 1, form->tag, tl))
		return NULL;
	token = strndup(addr + ll + 1 + tl, (size_t)(at - addr - ll - 1 - tl));
	for (char *c = token; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
	return token;
}

char *
thread_token_of(const struct location_config *loc, bool bounce, const char *tag, const char *addr)
{
	struct thread_form forms[2];
	size_t nf = thread_forms(loc, bounce, forms);
	char *token = NULL;

	/* the forms differ in local part, tag or domain: one matches at most */
	for (size_t f = 0; f < nf && !token; f++) {
		if (tag)
			forms[f].tag = tag;
		token = thread_token_parse(addr, &forms[f]);
	}
	return token;
}

struct msgmap *
thread_by_token(struct store *st, const struct location_config *loc, bool bounce, char *const *addrs,
    size_t n_addrs)
{
	for (size_t i = 0; i < n_addrs; i++) {
		char *token = thread_token_of(loc, bounce, NULL, addrs[i]);
		struct msgmap *m = NULL;
		int r = token ? store_msgmap_get(st, MSGMAP_BY_TOKEN, loc->id, token, &m) : 0;
		free(token);
		if (r == 1)
			return m;
		store_msgmap_free(m);
	}
	return NULL;
}

static char *
strip_brackets(const char *s)
{
	size_t len;
	while (*s == ' ' || *s == '<')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == '>' || s[len - 1] == ' '))
		len--;
	return strndup(s, len);
}

struct msgmap *
thread_parent_for_outbound(struct store *st, const char *location_id, const char *reply_to_alt_id,
    const char *email_message_id, const char *message_id, char **parent_id_r)
{
	struct msgmap *parent = NULL;

	*parent_id_r = NULL;
	if (reply_to_alt_id && *reply_to_alt_id) {
		/* custom mode: altId is the Message-ID we posted inbound */
		char *alt = strip_brackets(reply_to_alt_id);
		if (store_msgmap_get(st, MSGMAP_BY_ALT, location_id, alt, &parent) != 1 &&
		    store_msgmap_get(st, MSGMAP_BY_RFC, location_id, alt, &parent) != 1)
			*parent_id_r = xstrdup(alt);
		free(alt);
	} else if (email_message_id && strcmp(email_message_id, message_id) != 0) {
		/* default mode: emailMessageId names an earlier email of the
		 * thread: that message itself, else the latest one threaded under
		 * the same id */
		if (store_msgmap_get(st, MSGMAP_BY_GHL, location_id, email_message_id, &parent) != 1)
			store_msgmap_get(st, MSGMAP_BY_EMAIL, location_id, email_message_id, &parent);
	}
	if (parent && !*parent_id_r)
		*parent_id_r = xstrdup(parent->rfc_message_id);
	return parent;
}

struct msgmap *
thread_parent_for_inbound(struct store *st, const struct location_config *loc, const char *in_reply_to,
    char *const *references, size_t n_references, char *const *rcpts, size_t n_rcpts)
{
	struct msgmap *p = NULL;

	if (in_reply_to && store_msgmap_get(st, MSGMAP_BY_RFC, loc->id, in_reply_to, &p) == 1)
		return p;
	for (size_t i = n_references; i-- > 0;)
		if (store_msgmap_get(st, MSGMAP_BY_RFC, loc->id, references[i], &p) == 1)
			return p;
	/* a client that dropped In-Reply-To still answers the token's address */
	return thread_by_token(st, loc, false, rcpts, n_rcpts);
}

void
thread_headers(const struct msgmap *parent, const char *parent_id, char **in_reply_to_r, char **references_r)
{
	*in_reply_to_r = *references_r = NULL;
	if (!parent_id || strpbrk(parent_id, " <>\r\n") || !strchr(parent_id, '@'))
		return;
	*in_reply_to_r = xasprintf("<%s>", parent_id);
	*references_r = parent && parent->references && *parent->references ?
	    xasprintf("%s <%s>", parent->references, parent_id) : xasprintf("<%s>", parent_id);
}
