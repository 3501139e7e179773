/*
 * test-reserve.c - unit tests of the disk reserve (store/reserve.c): the
 * file holds its size once taken and nothing once released, is created
 * only when it can be taken, is taken over as it is from an earlier run,
 * says when it was found released, and never follows a symbolic link.
 * Each test gets its own mkdtemp directory.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/reserve.h"

#define MIB (UINT64_C(1) << 20)
/* More than any disk this runs on has free. */
#define HUGE (UINT64_C(1) << 60)

typedef struct Fixture {
	char dir[PATH_MAX];
	char path[PATH_MAX + 16];
} Fixture;

static int
setup(void **state)
{
	Fixture *fx = calloc(1, sizeof(*fx));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "%s/test-reserve-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/db-reserve", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	Fixture *fx = *state;
	char other[PATH_MAX + 16];

	unlink(fx->path);
	snprintf(other, sizeof(other), "%s/target", fx->dir);
	unlink(other);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx);
	return 0;
}

/* Bytes the file at path has allocated; -1 if it does not exist. */
static int64_t
allocated(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return -1;
	return (int64_t)st.st_blocks * 512;
}

/* Taken, the file holds the size; released, nothing; taken again, the
 * size again. */
static void
test_take_release_take(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;

	assert_int_equal(reserve_file_new(&rf, fx->path, 2 * MIB), 0);
	assert_false(reserve_file_held(rf));
	assert_int_equal(allocated(fx->path), -1);
	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(reserve_file_held(rf));
	assert_false(reserve_file_was_short(rf));
	assert_true(allocated(fx->path) >= (int64_t)(2 * MIB));
	assert_int_equal(reserve_file_take(rf), 0); /* held: nothing to do */

	assert_int_equal(reserve_file_release(rf), 0);
	assert_false(reserve_file_held(rf));
	assert_int_equal(allocated(fx->path), 0);
	assert_int_equal(reserve_file_release(rf), 0);

	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(reserve_file_was_short(rf));
	assert_true(allocated(fx->path) >= (int64_t)(2 * MIB));
	assert_string_equal(reserve_file_path(rf), fx->path);
	assert_true(reserve_file_size(rf) == 2 * MIB);
	reserve_file_free(rf);
	/* Closing keeps it: the next start takes it over. */
	assert_true(allocated(fx->path) >= (int64_t)(2 * MIB));
}

/* Given back in parts: half, then the rest; a file left with half by an
 * earlier run, on a disk without room to take it whole, keeps its half
 * for a later release. */
static void
test_release_in_parts(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;

	assert_int_equal(reserve_file_new(&rf, fx->path, 2 * MIB), 0);
	assert_int_equal(reserve_file_kept(rf), 0);
	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(reserve_file_kept(rf) == 2 * MIB);

	assert_int_equal(reserve_file_release_part(rf, MIB), 0);
	assert_false(reserve_file_held(rf));
	assert_true(reserve_file_kept(rf) == MIB);
	assert_int_equal(allocated(fx->path), (int64_t)MIB);
	/* Keeping more than it holds changes nothing. */
	assert_int_equal(reserve_file_release_part(rf, 2 * MIB), 0);
	assert_true(reserve_file_kept(rf) == MIB);
	assert_int_equal(allocated(fx->path), (int64_t)MIB);
	assert_int_equal(reserve_file_release(rf), 0);
	assert_int_equal(reserve_file_kept(rf), 0);
	assert_int_equal(allocated(fx->path), 0);

	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(reserve_file_kept(rf) == 2 * MIB);
	assert_int_equal(reserve_file_release_part(rf, MIB), 0);
	reserve_file_free(rf);

	/* The next run: no room to take it whole; the half stays, known. */
	assert_int_equal(reserve_file_new(&rf, fx->path, HUGE), 0);
	assert_int_equal(reserve_file_take(rf), -ENOSPC);
	assert_true(reserve_file_was_short(rf));
	assert_true(reserve_file_kept(rf) == MIB);
	assert_int_equal(allocated(fx->path), (int64_t)MIB);
	assert_int_equal(reserve_file_release(rf), 0);
	assert_int_equal(allocated(fx->path), 0);
	reserve_file_free(rf);
}

/* Without room for it twice over nothing is created; a file left short by
 * an earlier run is reported as such, and left as it is. */
static void
test_no_room(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;
	int fd;

	assert_int_equal(reserve_file_new(&rf, fx->path, HUGE), 0);
	assert_int_equal(reserve_file_take(rf), -ENOSPC);
	assert_false(reserve_file_held(rf));
	assert_false(reserve_file_was_short(rf));
	assert_int_equal(allocated(fx->path), -1);
	assert_non_null(strstr(reserve_file_errmsg(rf), "needs twice"));
	reserve_file_free(rf);

	fd = open(fx->path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(reserve_file_new(&rf, fx->path, HUGE), 0);
	assert_int_equal(reserve_file_take(rf), -ENOSPC);
	assert_true(reserve_file_was_short(rf));
	assert_int_equal(allocated(fx->path), 0);
	reserve_file_free(rf);
}

/* A file that holds the size already is taken over without asking for
 * room: on a disk that filled since, it is what the drains need. */
static void
test_taken_over(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;
	uint64_t free_bytes = 0;
	int fd;

	fd = open(fx->path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(posix_fallocate(fd, 0, (off_t)(4 * MIB)), 0);
	close(fd);
	assert_int_equal(reserve_file_new(&rf, fx->path, 4 * MIB), 0);
	assert_int_equal(reserve_file_disk_free(rf, &free_bytes), 0);
	assert_true(free_bytes > 0);
	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(reserve_file_held(rf));
	assert_false(reserve_file_was_short(rf));
	reserve_file_free(rf);

	/* A smaller reserve than the file: cut to its size. */
	assert_int_equal(reserve_file_new(&rf, fx->path, 1 * MIB), 0);
	assert_int_equal(reserve_file_take(rf), 0);
	assert_true(allocated(fx->path) < (int64_t)(2 * MIB));
	reserve_file_free(rf);
}

/* A symbolic link in its place is refused, and what it names untouched. */
static void
test_no_symlink(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;
	char target[PATH_MAX + 16];
	int fd;

	snprintf(target, sizeof(target), "%s/target", fx->dir);
	fd = open(target, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(symlink(target, fx->path), 0);
	assert_int_equal(reserve_file_new(&rf, fx->path, 1 * MIB), 0);
	assert_true(reserve_file_take(rf) < 0);
	assert_false(reserve_file_held(rf));
	assert_int_equal(allocated(target), 0);
	assert_non_null(strstr(reserve_file_errmsg(rf), fx->path));
	reserve_file_free(rf);
}

/* A reserve of 0 is never taken; a path too long is refused. */
static void
test_none_and_long(void **state)
{
	Fixture *fx = *state;
	ReserveFile *rf = NULL;
	static char longpath[PATH_MAX + 10];

	assert_int_equal(reserve_file_new(&rf, fx->path, 0), 0);
	assert_true(reserve_file_take(rf) < 0);
	assert_false(reserve_file_held(rf));
	assert_int_equal(allocated(fx->path), -1);
	reserve_file_free(rf);

	memset(longpath, 'a', sizeof(longpath) - 1);
	assert_int_equal(reserve_file_new(&rf, longpath, MIB), -ENAMETOOLONG);
	assert_null(rf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_take_release_take, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_release_in_parts, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_no_room, setup, teardown),
		cmocka_unit_test_setup_teardown(test_taken_over, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_no_symlink, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_none_and_long, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
