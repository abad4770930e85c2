#include "contact.h"
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONTACT_CACHE_MAX 10000

struct contact_entry {
	char *key;                 /* location \n email-or-phone */
	char *contact_id;
	struct contact_entry *next;
};

static pthread_mutex_t contact_lock = PTHREAD_MUTEX_INITIALIZER;
static struct contact_entry *contact_cache;
static size_t contact_count;

static char *
contact_cache_get(const char *loc, const char *who)
{
	char *key = xasprintf("%s\n%s", loc, who), *id = NULL;
	pthread_mutex_lock(&contact_lock);
	for (struct contact_entry *e = contact_cache; e; e = e->next)
		if (!strcasecmp(e->key, key)) {
			id = xstrdup(e->contact_id);
			break;
		}
	pthread_mutex_unlock(&contact_lock);
	free(key);
	return id;
}

static void
contact_cache_put(const char *loc, const char *who, const char *id)
{
	struct contact_entry *e;
	pthread_mutex_lock(&contact_lock);
	if (contact_count < CONTACT_CACHE_MAX) {
		e = xcalloc(1, sizeof(*e));
		e->key = xasprintf("%s\n%s", loc, who);
		e->contact_id = xstrdup(id);
		e->next = contact_cache;
		contact_cache = e;
		contact_count++;
	}
	pthread_mutex_unlock(&contact_lock);
}

char *
contact_find(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, struct ghl_step *s)
{
	struct ghl_result res;
	const char *who = email ? email : phone;
	char *id = contact_cache_get(loc->id, who);
	char *el, *ev, *path;

	if (id)
		return id;
	el = curl_easy_escape(NULL, loc->id, 0);
	ev = curl_easy_escape(NULL, who, 0);   /* '+' of E.164 becomes %2B */
	path = xasprintf("/contacts/search/duplicate?locationId=%s&%s=%s", el, email ? "email" : "number", ev);
	curl_free(el);
	curl_free(ev);
	ghl_call(app->ghl, loc->id, "GET", path, GHL_VERSION_CONTACTS, NULL, &res);
	free(path);
	if (res.cls == GHL_OK) {
		json_t *c = json_object_get(res.body, "contact");
		if (ghl_jstr(c, "id"))
			id = xstrdup(ghl_jstr(c, "id"));
	} else {
		ghl_step_from(s, &res, "contact search");
		ghl_result_clear(&res);
		return NULL;
	}
	ghl_result_clear(&res);
	if (!id && !create) {
		s->cls = GHL_PERMANENT;
		free(s->error);
		s->error = xasprintf("no contact with %s %s (HighLevel needs one for this)", email ? "email" : "phone", who);
		return NULL;
	}
	if (!id) {
		json_t *body = json_pack("{s:s, s:s}", "locationId", loc->id, "source", "mailbridge");
		ghl_jset(body, email ? "email" : "phone", who);
		if (name)
			ghl_jset(body, "name", name);
		ghl_call(app->ghl, loc->id, "POST", "/contacts/upsert", GHL_VERSION_CONTACTS, body, &res);
		if (res.cls == GHL_OK && ghl_jstr(json_object_get(res.body, "contact"), "id")) {
			id = xstrdup(ghl_jstr(json_object_get(res.body, "contact"), "id"));
			log_info("contact: created locationId=%s contactId=%s", loc->id, id);
		} else {
			ghl_step_from(s, &res, "contact upsert");
			if (res.cls == GHL_OK)
				s->cls = GHL_PERMANENT;   /* 2xx without a contact id */
		}
		ghl_result_clear(&res);
	}
	if (id)
		contact_cache_put(loc->id, who, id);
	return id;
}

char *
conversation_find(struct app *app, const struct location_config *loc, const char *contact_id, struct ghl_step *s)
{
	struct ghl_result res;
	char *el = curl_easy_escape(NULL, loc->id, 0), *ec = curl_easy_escape(NULL, contact_id, 0);
	char *path = xasprintf("/conversations/search?locationId=%s&contactId=%s", el, ec);
	char *id = NULL;

	curl_free(el);
	curl_free(ec);
	ghl_call(app->ghl, loc->id, "GET", path, GHL_VERSION_CONVERSATIONS, NULL, &res);
	free(path);
	if (res.cls != GHL_OK) {
		ghl_step_from(s, &res, "conversation search");
		ghl_result_clear(&res);
		return NULL;
	}
	{
		json_t *list = json_object_get(res.body, "conversations");
		if (json_is_array(list) && json_array_size(list) > 0 && ghl_jstr(json_array_get(list, 0), "id"))
			id = xstrdup(ghl_jstr(json_array_get(list, 0), "id"));
	}
	ghl_result_clear(&res);
	if (!id) {
		json_t *body = json_pack("{s:s, s:s}", "locationId", loc->id, "contactId", contact_id);
		ghl_call(app->ghl, loc->id, "POST", "/conversations/", GHL_VERSION_CONVERSATIONS, body, &res);
		if (res.cls == GHL_OK && ghl_jstr(json_object_get(res.body, "conversation"), "id"))
			id = xstrdup(ghl_jstr(json_object_get(res.body, "conversation"), "id"));
		else if (res.cls == GHL_OK && ghl_jstr(res.body, "id"))
			id = xstrdup(ghl_jstr(res.body, "id"));
		else {
			ghl_step_from(s, &res, "conversation create");
			if (res.cls == GHL_OK)
				s->cls = GHL_PERMANENT;
		}
		ghl_result_clear(&res);
	}
	return id;
}

int
contact_conversation(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, char **contact_r, char **conversation_r, struct ghl_step *s)
{
	*conversation_r = NULL;
	*contact_r = contact_find(app, loc, email, phone, name, create, s);
	if (*contact_r)
		*conversation_r = conversation_find(app, loc, *contact_r, s);
	return *contact_r && *conversation_r;
}
