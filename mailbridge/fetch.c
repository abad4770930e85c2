#include "fetch.h"
#include "log.h"
#include "mime_out.h"
#include "netaddr.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define FETCH_MAX_NAME 200
#define FETCH_MAX_REDIRECTS 5

struct fetch_state {
	int fd;                    /* the body goes to this unlinked file */
	size_t len, max;
	bool too_big, write_failed, refused;
	const struct netaddr_list *allow;
	bool any_address;          /* this hop's origin is allowed: no address check */
	char *disposition_name;
	char refused_addr[INET6_ADDRSTRLEN];
};

static size_t
fetch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct fetch_state *fs = userdata;
	size_t n = size * nmemb, done = 0;

	if (fs->len + n > fs->max) {
		fs->too_big = true;
		return 0;           /* aborts the transfer */
	}
	while (done < n) {
		ssize_t w = write(fs->fd, ptr + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fs->write_failed = true;
			return 0;
		}
		done += (size_t)w;
	}
	fs->len += n;
	return n;
}

/* Every connection, on every hop, is checked where it really goes: a
 * name that resolves (or re-resolves, DNS rebinding) to an internal
 * address is refused here, after resolution, not before. */
static curl_socket_t
fetch_opensocket(void *userdata, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct fetch_state *fs = userdata;

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	if (!fs->any_address && !netaddr_is_public(&a->addr) && !netaddr_list_has_addr(fs->allow, &a->addr)) {
		fs->refused = true;
		netaddr_to_string(&a->addr, fs->refused_addr, sizeof(fs->refused_addr));
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
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

/* A file that vanishes with its descriptor, in dir. -1 on failure. */
static int
fetch_tmpfile(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		char *path = xasprintf("%s/fetch-XXXXXX", dir);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			unlink(path);
		free(path);
	}
	return fd;
}

/* The URL without its query and fragment, for the log (signed storage
 * URLs carry their credentials there). malloc'd. */
static char *
url_for_log(const char *url)
{
	return xasprintf("%.*s", (int)strcspn(url, "?#"), url);
}

/* One request, no redirects followed: *status_r and, for a 3xx,
 * *location_r (malloc'd). */
static CURLcode
fetch_hop(const char *url, struct fetch_state *fs, int64_t deadline, long *status_r, char **location_r,
    char **ctype_r, char *errbuf)
{
	CURL *h = curl_easy_init();
	char *loc = NULL, *ctype = NULL;
	int64_t left = deadline - mono_ms();
	CURLcode rc;

	if (!h)
		return CURLE_OUT_OF_MEMORY;
	if (left <= 0)
		left = 1;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROXY, "");           /* never the environment's proxy */
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(left < 10000 ? left : 10000));
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(fs->max - fs->len));
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, fetch_opensocket);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, fs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, fs);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, fs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mailbridge/" MB_VERSION);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status_r);
	curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
	curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
	*ctype_r = xstrdup(ctype);
	*location_r = *status_r >= 300 && *status_r < 400 ? xstrdup(loc) : NULL;
	curl_easy_cleanup(h);
	return rc;
}

/* Empties the file for the next hop (a redirect's body is not ours). */
static bool
fetch_rewind(struct fetch_state *fs)
{
	fs->len = 0;
	free(fs->disposition_name);
	fs->disposition_name = NULL;
	return ftruncate(fs->fd, 0) == 0 && lseek(fs->fd, 0, SEEK_SET) == 0;
}

static void
fetch_take(struct fetch_state *fs, const char *url, const char *ctype, struct mime_attachment *out)
{
	char *semi;

	if (fs->len > 0) {
		void *map = mmap(NULL, fs->len, PROT_READ, MAP_PRIVATE, fs->fd, 0);
		if (map != MAP_FAILED) {
			out->data = map;
			out->map_len = fs->len;
		}
	}
	if (!out->data)
		out->data = xstrdup("");   /* empty: a harmless 1-byte heap string */
	out->len = fs->len;
	out->content_type = xstrdup(ctype && strchr(ctype, '/') ? ctype : "application/octet-stream");
	if ((semi = strchr(out->content_type, ';')))
		*semi = '\0';
	for (char *p = out->content_type; *p; p++)
		if (isspace((unsigned char)*p) || !isprint((unsigned char)*p))
			*p = '\0';
	out->filename = fs->disposition_name ? fs->disposition_name : name_from_url(url);
	fs->disposition_name = NULL;
	if (!out->filename)
		out->filename = xstrdup("attachment");
}

enum fetch_result
fetch_attachment(const char *url, const struct fetch_limits *lim, struct mime_attachment *out, char **error_r)
{
	struct fetch_state fs = { -1, 0, lim->max_bytes, false, false, false, lim->allow, false, NULL, "" };
	char errbuf[CURL_ERROR_SIZE];
	char *hop_url = xstrdup(url), *detail = NULL, *logged;
	enum fetch_result ret = FETCH_OK;
	int hops = 0;

	memset(out, 0, sizeof(*out));
	*error_r = NULL;
	if ((fs.fd = fetch_tmpfile(lim->tmp_dir)) < 0) {
		log_warn("fetch: cannot create a temporary file in %s: %s", lim->tmp_dir, strerror(errno));
		*error_r = xstrdup("attachment could not be stored (temporary)");
		free(hop_url);
		return FETCH_TEMP;
	}
	for (;;) {
		long status = 0;
		char *location = NULL, *ctype = NULL;
		CURLcode rc;

		errbuf[0] = '\0';
		fs.any_address = netaddr_list_has_origin(lim->allow, hop_url);
		if (mono_ms() >= lim->deadline_ms) {
			detail = xstrdup("the message's fetch deadline (attachment_timeout) passed");
			ret = FETCH_TEMP;
			break;
		}
		rc = fetch_hop(hop_url, &fs, lim->deadline_ms, &status, &location, &ctype, errbuf);
		if (fs.refused) {
			detail = xasprintf("refused to connect to %s: not a public address and not in attachment_allow",
			    fs.refused_addr);
			ret = FETCH_PERM;
		} else if (fs.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
			detail = xasprintf("larger than the %zu bytes left for this message", lim->max_bytes);
			ret = FETCH_TOO_BIG;
		} else if (fs.write_failed) {
			detail = xasprintf("cannot write the temporary file: %s", strerror(errno));
			ret = FETCH_TEMP;
		} else if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
			detail = xstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
			ret = FETCH_PERM;
		} else if (rc == CURLE_OPERATION_TIMEDOUT && mono_ms() >= lim->deadline_ms - 50) {
			detail = xstrdup("the message's fetch deadline (attachment_timeout) passed");
			ret = FETCH_TEMP;
		} else if (rc != CURLE_OK) {
			detail = xstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
			ret = FETCH_TEMP;
		} else if (location && ++hops <= FETCH_MAX_REDIRECTS) {
			free(hop_url);
			hop_url = location;
			free(ctype);
			if (!fetch_rewind(&fs)) {
				detail = xstrdup("cannot reuse the temporary file");
				ret = FETCH_TEMP;
				break;
			}
			continue;          /* the next hop is checked like the first */
		} else if (location) {
			detail = xasprintf("more than %d redirects", FETCH_MAX_REDIRECTS);
			ret = FETCH_PERM;
		} else if (status >= 300 || status < 200) {
			/* a 3xx without a Location is no file either */
			detail = xasprintf("HTTP %ld", status);
			/* 404/410/403 will not heal; 408/429/5xx may */
			ret = (status == 408 || status == 429 || status >= 500) ? FETCH_TEMP : FETCH_PERM;
		} else {
			fetch_take(&fs, hop_url, ctype, out);
		}
		free(location);
		free(ctype);
		break;
	}
	if (ret != FETCH_OK) {
		/* the detail stays here: the reason HighLevel (and whoever sent
		 * the webhook) sees must not map our network */
		logged = url_for_log(hop_url);
		log_warn("fetch: attachment %s: %s", logged, detail);
		free(logged);
		*error_r = xstrdup(ret == FETCH_TOO_BIG ? "attachment too large" :
		    ret == FETCH_TEMP ? "attachment could not be fetched (temporary)" : "attachment could not be fetched");
		if (ret == FETCH_TOO_BIG)
			ret = FETCH_PERM;
		mime_attachment_clear(out);
	}
	free(detail);
	free(hop_url);
	free(fs.disposition_name);
	close(fs.fd);
	return ret;
}
