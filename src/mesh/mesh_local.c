/* Node key file location and the ~/.models scan. */
#include "mesh/mesh_local.h"

#include "base/ml_err.h"
#include "base/ml_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int mesh_ident_path(char *out, size_t cap, const char *override)
{
	int n;
	if (override) {
		n = snprintf(out, cap, "%s", override);
	} else {
		const char *home = getenv("HOME");
		if (!home || !*home)
			return ml_error(ML_ERR_NOT_FOUND, "%s: $HOME is not set; give a key path",
			                __func__);
		n = snprintf(out, cap, "%s/.mesh-llm/key", home);
	}
	if (n < 0 || (size_t)n >= cap)
		return ml_error(ML_ERR_RANGE, "%s: path too long", __func__);
	return 0;
}

int mesh_ident_load(struct net_ident *id, const char *override, bool ephemeral, bool *created)
{
	if (ephemeral) {
		if (created)
			*created = true;
		return net_ident_generate(id);
	}
	char path[4096];
	int rc = mesh_ident_path(path, sizeof(path), override);
	if (rc)
		return rc;
	char *slash = strrchr(path, '/');
	if (slash && slash != path) {
		*slash = 0;
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return ml_error(ML_ERR_IO, "%s: cannot create %s: %s", __func__, path,
			                strerror(errno));
		*slash = '/';
	}
	bool made = false;
	rc = net_ident_load_or_create(id, path, &made);
	if (rc)
		return rc;
	if (made)
		ML_INFO("created a new node key in %s", path);
	if (created)
		*created = made;
	return 0;
}

#define MESH_FILE_MAGIC "mesh-llm mesh v1\n"

static int mkdir_parent(const char *path)
{
	char dir[4096];
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return ml_error(ML_ERR_RANGE, "mesh: path too long");
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return ml_error(ML_ERR_IO, "mesh: cannot create %s: %s", dir, strerror(errno));
	return 0;
}

int mesh_secret_load_or_create(const char *path, uint8_t mesh_id[16], uint8_t secret[32],
                               bool *created)
{
	if (created)
		*created = false;
	char text[256];
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = 0;
		size_t ml = strlen(MESH_FILE_MAGIC);
		size_t bin = 0;
		if (n < ml + 32 + 1 + 64 || memcmp(text, MESH_FILE_MAGIC, ml) != 0 ||
		    text[ml + 32] != '\n' ||
		    sodium_hex2bin(mesh_id, 16, text + ml, 32, NULL, &bin, NULL) != 0 ||
		    bin != 16 ||
		    sodium_hex2bin(secret, 32, text + ml + 33, 64, NULL, &bin, NULL) != 0 ||
		    bin != 32) {
			sodium_memzero(text, sizeof(text));
			return ml_error(ML_ERR_FORMAT, "%s: %s is not a mesh file", __func__, path);
		}
		sodium_memzero(text, sizeof(text));
		return 0;
	}
	if (errno != ENOENT)
		return ml_error(ML_ERR_IO, "%s: cannot read %s: %s", __func__, path,
		                strerror(errno));
	int rc = mkdir_parent(path);
	if (rc)
		return rc;
	if (sodium_init() < 0)
		return ml_error(ML_ERR_IO, "%s: libsodium initialisation failed", __func__);
	randombytes_buf(mesh_id, 16);
	randombytes_buf(secret, 32);
	char idhex[33], sechex[65], tmp[4200];
	sodium_bin2hex(idhex, sizeof(idhex), mesh_id, 16);
	sodium_bin2hex(sechex, sizeof(sechex), secret, 32);
	int len = snprintf(text, sizeof(text), "%s%s\n%s\n", MESH_FILE_MAGIC, idhex, sechex);
	sodium_memzero(sechex, sizeof(sechex));
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	bool ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	sodium_memzero(text, sizeof(text));
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return ml_error(ML_ERR_IO, "%s: cannot write %s: %s", __func__, path,
		                strerror(errno));
	}
	if (created)
		*created = true;
	return 0;
}

static bool is_later_split_part(const char *name)
{
	const char *p = strstr(name, "-of-");
	if (!p || p < name + 6)
		return false;
	/* "...-00002-of-00003.gguf": the part number is the 5 digits before */
	const char *num = p - 5;
	if (num[-1] != '-')
		return false;
	return strncmp(num, "00001", 5) != 0;
}

static int cmp_model(const void *a, const void *b)
{
	return strcmp(((const struct mesh_model_info *)a)->name,
	              ((const struct mesh_model_info *)b)->name);
}

static void scan_dir(const char *root, const char *rel, int depth, struct mesh_model_info *out,
                     size_t cap, size_t *n)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel) >=
	    (int)sizeof(path))
		return;
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && *n < cap) {
		if (e->d_name[0] == '.')
			continue;
		char sub[4096], full[4096];
		if (snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >=
		    (int)sizeof(sub))
			continue;
		if (snprintf(full, sizeof(full), "%s/%s", root, sub) >= (int)sizeof(full))
			continue;
		struct stat st;
		if (stat(full, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth < 2)
				scan_dir(root, sub, depth + 1, out, cap, n);
			continue;
		}
		size_t len = strlen(sub);
		if (!S_ISREG(st.st_mode) || len < 5 || strcmp(sub + len - 5, ".gguf") != 0 ||
		    len > MESH_NAME_MAX || is_later_split_part(e->d_name))
			continue;
		memcpy(out[*n].name, sub, len + 1);
		out[*n].bytes = (uint64_t)st.st_size;
		(*n)++;
	}
	closedir(d);
}

int mesh_models_scan(const char *dir, struct mesh_model_info *out, size_t cap)
{
	char buf[4096];
	if (!dir) {
		const char *home = getenv("HOME");
		if (!home)
			return 0;
		snprintf(buf, sizeof(buf), "%s/.models", home);
		dir = buf;
	}
	size_t n = 0;
	scan_dir(dir, "", 1, out, cap, &n);
	qsort(out, n, sizeof(*out), cmp_model);
	return (int)n;
}
