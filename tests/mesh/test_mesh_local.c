/* Tests for src/mesh/mesh_local.c: the node key file honours $HOME and an
 * override path, is created once with mode 0600 (directory 0700) and gives
 * the same id on the next start; ephemeral keys are not saved; the
 * ~/.models scan lists GGUF files (first split part only). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/ml_err.h"
#include "mesh/mesh_local.h"

static char dir[256];

static void touch(const char *rel, size_t bytes)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	for (size_t i = 0; i < bytes; i++)
		fputc('x', f);
	fclose(f);
}

static void test_mesh_ident_home(void **state)
{
	(void)state;
	char old_home[512] = "";
	if (getenv("HOME"))
		snprintf(old_home, sizeof(old_home), "%s", getenv("HOME"));
	setenv("HOME", dir, 1);
	char path[512];
	assert_int_equal(mesh_ident_path(path, sizeof(path), NULL), 0);
	char want[512];
	snprintf(want, sizeof(want), "%s/.mesh-llm/key", dir);
	assert_string_equal(path, want);
	struct net_ident a, b;
	bool created = false;
	assert_int_equal(mesh_ident_load(&a, NULL, false, &created), 0);
	assert_true(created);
	struct stat st;
	assert_int_equal(stat(want, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char d[512];
	snprintf(d, sizeof(d), "%s/.mesh-llm", dir);
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(mesh_ident_load(&b, NULL, false, &created), 0);
	assert_false(created);
	assert_memory_equal(a.pk, b.pk, NET_ID_LEN);
	/* ephemeral: fresh and not saved */
	assert_int_equal(mesh_ident_load(&b, NULL, true, &created), 0);
	assert_memory_not_equal(a.pk, b.pk, NET_ID_LEN);
	struct net_ident c;
	assert_int_equal(mesh_ident_load(&c, NULL, false, NULL), 0);
	assert_memory_equal(a.pk, c.pk, NET_ID_LEN);
	/* override path */
	char ov[512];
	snprintf(ov, sizeof(ov), "%s/other/node.key", dir);
	assert_int_equal(mesh_ident_load(&b, ov, false, &created), 0);
	assert_true(created);
	assert_memory_not_equal(a.pk, b.pk, NET_ID_LEN);
	assert_int_equal(stat(ov, &st), 0);
	/* no $HOME and no override */
	unsetenv("HOME");
	assert_int_equal(mesh_ident_path(path, sizeof(path), NULL), ML_ERR_NOT_FOUND);
	if (old_home[0])
		setenv("HOME", old_home, 1);
}

static void test_mesh_models_scan(void **state)
{
	(void)state;
	char m[512];
	snprintf(m, sizeof(m), "%s/models", dir);
	mkdir(m, 0755);
	snprintf(m, sizeof(m), "%s/models/sub", dir);
	mkdir(m, 0755);
	touch("models/b.gguf", 10);
	touch("models/a.gguf", 3);
	touch("models/readme.txt", 1);
	touch("models/sub/big-00001-of-00002.gguf", 5);
	touch("models/sub/big-00002-of-00002.gguf", 5);
	struct mesh_model_info out[8];
	snprintf(m, sizeof(m), "%s/models", dir);
	int n = mesh_models_scan(m, out, 8);
	assert_int_equal(n, 3);
	assert_string_equal(out[0].name, "a.gguf");
	assert_int_equal(out[0].bytes, 3);
	assert_string_equal(out[1].name, "b.gguf");
	assert_string_equal(out[2].name, "sub/big-00001-of-00002.gguf");
	assert_int_equal(mesh_models_scan(m, out, 1), 1);
	snprintf(m, sizeof(m), "%s/nonexistent", dir);
	assert_int_equal(mesh_models_scan(m, out, 8), 0);
}

static void test_mesh_secret_file(void **state)
{
	(void)state;
	char p[512];
	snprintf(p, sizeof(p), "%s/state/mesh", dir);
	uint8_t id1[16], s1[32], id2[16], s2[32];
	bool created = false;
	assert_int_equal(mesh_secret_load_or_create(p, id1, s1, &created), 0);
	assert_true(created);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(mesh_secret_load_or_create(p, id2, s2, &created), 0);
	assert_false(created);
	assert_memory_equal(id1, id2, 16);
	assert_memory_equal(s1, s2, 32);
	/* a damaged file is refused, not replaced */
	FILE *f = fopen(p, "r+");
	fseek(f, 20, SEEK_SET);
	fputc('z', f);
	fclose(f);
	assert_int_equal(mesh_secret_load_or_create(p, id2, s2, &created), ML_ERR_FORMAT);
	f = fopen(p, "w");
	fputs("mesh-llm mesh v1\nshort\n", f);
	fclose(f);
	assert_int_equal(mesh_secret_load_or_create(p, id2, s2, &created), ML_ERR_FORMAT);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_mesh_local.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mesh_ident_home),
	    cmocka_unit_test(test_mesh_models_scan),
	    cmocka_unit_test(test_mesh_secret_file),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		rc = rc ? rc : 1;
	return rc;
}
