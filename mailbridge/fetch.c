#include "fetch.h"
#include "mime_out.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FETCH_MAX_NAME 200

struct fetch_state {
	struct mime_attachment *a;
	size_t cap, max;
	bool too_big;
	char *disposition_name;
};

static size_t
fetch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct fetch_state *fs = userdata;
	size_t n = size * nmemb;

	if (fs->a->len + n > fs->max) {
		fs->too_big = true;
		return 0;           /* aborts the transfer */
	}
	if (fs->a->len + n > fs->cap) {
		fs->cap = (fs->a->len + n) * 2;
		fs->a->data = xrealloc(fs->a->data, fs->cap);
	}
	memcpy(fs->a->data + fs->a->len, ptr, n);
	fs->a->len += n;
	return n;
}

/* Keeps a file name safe for a MIME parameter: no path, no controls. */
static char *
clean_name(const char *s, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t j = 0;
	for (size_t i = 0; i < len && j < FETCH_MAX_NAME; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '/' || c == '\\')
			j = 0;          /* keep the last path element */
		else if (c >= 0x20 && c != 0x7f && c != '"')
			out[j++] = (char)c;
	}
	out[j] = '\0';
	if (j == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
		free(out);
		return NULL;
	}
	return out;
}

static size_t
fetch_header(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct fetch_state *fs = userdata;
	size_t n = size * nitems;
	const char *key = "content-disposition:";

	if (n > strlen(key) && strncasecmp(buf, key, strlen(key)) == 0) {
		const char *fn = strcasestr(buf, "filename=");
		if (fn && !fs->disposition_name) {
			const char *v = fn + 9, *end;
			if (*v == '"') {
				v++;
				end = memchr(v, '"', (size_t)(buf + n - v));
			} else {
				end = v;
				while (end < buf + n && *end != ';' && *end != '\r' && *end != '\n')
					end++;
			}
			if (end)
				fs->disposition_name = clean_name(v, (size_t)(end - v));
		}
	}
	return n;
}

static char *
name_from_url(const char *url)
{
	const char *start = strstr(url, "://");
	const char *end, *slash;

	start = start ? start + 3 : url;
	end = start + strcspn(start, "?#");
	slash = NULL;
	for (const char *p = start; p < end; p++)
		if (*p == '/')
			slash = p;
	if (!slash || slash + 1 >= end)
		return NULL;
	{
		int outlen = 0;
		char *dec = curl_easy_unescape(NULL, slash + 1, (int)(end - slash - 1), &outlen);
		char *name = dec ? clean_name(dec, (size_t)outlen) : NULL;
		curl_free(dec);
		return name;
	}
}

enum fetch_result
fetch_attachment(const char *url, size_t max_bytes, long timeout_s, struct mime_attachment *out,
    char **error_r)
{
	CURL *h = curl_easy_init();
	struct fetch_state fs = { out, 0, max_bytes, false, NULL };
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	char *ctype = NULL;
	CURLcode rc;
	enum fetch_result ret = FETCH_OK;

	memset(out, 0, sizeof(*out));
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &fs);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &fs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mailbridge/0.1");
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);

	if (fs.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		*error_r = xasprintf("attachment %s is larger than %zu bytes", url, max_bytes);
		ret = FETCH_PERM;
	} else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
		*error_r = xasprintf("attachment %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		ret = FETCH_PERM;
	} else if (rc != CURLE_OK) {
		*error_r = xasprintf("attachment %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		ret = FETCH_TEMP;
	} else if (status >= 400) {
		*error_r = xasprintf("attachment %s: HTTP %ld", url, status);
		/* 404/410/403 will not heal; 408/429/5xx may */
		ret = (status == 408 || status == 429 || status >= 500) ? FETCH_TEMP : FETCH_PERM;
	}
	if (ret == FETCH_OK) {
		char *semi;
		out->content_type = xstrdup(ctype && strchr(ctype, '/') ? ctype : "application/octet-stream");
		if ((semi = strchr(out->content_type, ';')))
			*semi = '\0';
		for (char *p = out->content_type; *p; p++)
			if (isspace((unsigned char)*p) || !isprint((unsigned char)*p))
				*p = '\0';
		out->filename = fs.disposition_name ? fs.disposition_name : name_from_url(url);
		fs.disposition_name = NULL;
		if (!out->filename)
			out->filename = xstrdup("attachment");
	} else {
		mime_attachment_clear(out);
	}
	free(fs.disposition_name);
	curl_easy_cleanup(h);
	return ret;
}
