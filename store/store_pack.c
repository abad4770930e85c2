/* store_pack: payloads kept compact where the engine does not compress
 * them itself (see store_private.h). zlib, because it is the deflate every
 * system has, and Python's zlib module reads the same bytes (the tests). A
 * zlib stream costs more to set up than to run on a 10 KB payload (with
 * zlib's default 256 KiB of state: 1.4 ms fresh against 29 us reset,
 * measured here), so streams are kept in a small pool and reset between
 * payloads. */
#include "store_private.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* A packed value starts with a NUL byte, which no JSON text does, so an
 * unpacked one (written before packing, or by a store that does not pack)
 * reads as it is. */
#define PACK_MAGIC     "\0mbz1"
#define PACK_MAGIC_LEN 5
#define PACK_POOL      8
#define PACK_LEVEL     1           /* 4.6 times smaller on HTML; 6 saves 10 % more for 4 times the CPU */
/* An 8 KiB window and a small hash: 48 KiB a stream instead of zlib's
 * default 256 KiB, for 0.6 % more bytes on a 10 KB payload */
#define PACK_WINDOW_BITS 13
#define PACK_MEM_LEVEL   5
#define PACK_MAX       (64u << 20) /* an unpacked payload larger than this is corrupt */

/* Idle streams of one kind, reset and ready */
struct stream_pool {
	z_stream *z[PACK_POOL];
	int n;
};

struct store_packer {
	pthread_mutex_t lock;
	struct stream_pool deflaters, inflaters;
};

struct store_packer *
store_packer_new(void)
{
	struct store_packer *p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

static void
stream_end(z_stream *z, bool deflater)
{
	if (deflater)
		deflateEnd(z);
	else
		inflateEnd(z);
	free(z);
}

void
store_packer_free(struct store_packer *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->deflaters.n; i++)
		stream_end(p->deflaters.z[i], true);
	for (int i = 0; i < p->inflaters.n; i++)
		stream_end(p->inflaters.z[i], false);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* A stream from the pool, or a new one (NULL if zlib cannot make one). */
static z_stream *
stream_take(struct store_packer *p, bool deflater)
{
	struct stream_pool *pool = deflater ? &p->deflaters : &p->inflaters;
	z_stream *z = NULL;

	pthread_mutex_lock(&p->lock);
	if (pool->n > 0)
		z = pool->z[--pool->n];
	pthread_mutex_unlock(&p->lock);
	if (z)
		return z;
	z = xcalloc(1, sizeof(*z));
	if ((deflater ? deflateInit2(z, PACK_LEVEL, Z_DEFLATED, PACK_WINDOW_BITS, PACK_MEM_LEVEL, Z_DEFAULT_STRATEGY) :
	    inflateInit(z)) != Z_OK) {
		free(z);
		return NULL;
	}
	return z;
}

/* Back to the pool, reset, or ended when the pool is full. */
static void
stream_give(struct store_packer *p, z_stream *z, bool deflater)
{
	struct stream_pool *pool = deflater ? &p->deflaters : &p->inflaters;
	bool kept = false;

	if ((deflater ? deflateReset(z) : inflateReset(z)) == Z_OK) {
		pthread_mutex_lock(&p->lock);
		if ((kept = pool->n < PACK_POOL))
			pool->z[pool->n++] = z;
		pthread_mutex_unlock(&p->lock);
	}
	if (!kept)
		stream_end(z, deflater);
}

void *
store_pack(struct store_packer *p, const char *text, size_t len, size_t *len_r)
{
	z_stream *z;
	unsigned char *out;
	size_t cap;
	int r;

	if (len > PACK_MAX || !(z = stream_take(p, true)))
		return NULL;
	cap = PACK_MAGIC_LEN + deflateBound(z, (uLong)len);
	out = xmalloc(cap);
	memcpy(out, PACK_MAGIC, PACK_MAGIC_LEN);
	z->next_in = (Bytef *)(uintptr_t)text;
	z->avail_in = (uInt)len;
	z->next_out = out + PACK_MAGIC_LEN;
	z->avail_out = (uInt)(cap - PACK_MAGIC_LEN);
	r = deflate(z, Z_FINISH);
	*len_r = PACK_MAGIC_LEN + z->total_out;
	stream_give(p, z, true);
	if (r != Z_STREAM_END) {
		free(out);
		return NULL;
	}
	return out;
}

char *
store_unpack(struct store_packer *p, const void *data, size_t len)
{
	const unsigned char *in = data;
	z_stream *z;
	unsigned char *out = NULL;
	size_t cap, have = 0;
	int r = Z_OK;

	if (len < PACK_MAGIC_LEN || memcmp(in, PACK_MAGIC, PACK_MAGIC_LEN) != 0) {
		/* as written */
		out = xmalloc(len + 1);
		memcpy(out, in, len);
		out[len] = '\0';
		return (char *)out;
	}
	if (!p || !(z = stream_take(p, false)))
		return NULL;
	z->next_in = (Bytef *)(uintptr_t)(in + PACK_MAGIC_LEN);
	z->avail_in = (uInt)(len - PACK_MAGIC_LEN);
	cap = len * 8 + 64;        /* HTML packs about 4.6-fold: one pass, mostly */
	while (r == Z_OK && cap <= PACK_MAX) {
		out = xrealloc(out, cap + 1);
		z->next_out = out + have;
		z->avail_out = (uInt)(cap - have);
		r = inflate(z, Z_NO_FLUSH);
		have = cap - z->avail_out;
		if (r == Z_OK || r == Z_BUF_ERROR)
			cap *= 2;
		if (r == Z_BUF_ERROR && z->avail_in > 0)
			r = Z_OK;      /* only the output was full */
	}
	stream_give(p, z, false);
	if (r != Z_STREAM_END) {
		free(out);
		return NULL;
	}
	out[have] = '\0';
	return (char *)out;
}
