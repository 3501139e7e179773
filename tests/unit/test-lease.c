/*
 * test-lease.c - unit tests of the lease table (broker/lease.c): look-up
 * by message id, holders' lists, the deadline heap, and the groups by
 * mailbox that let a mailbox's deletion void its own leases only.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "broker/lease.h"

/* Leases of mailbox_id, counted through its group; each is checked to
 * belong to it. */
static size_t
group_count(const LeaseTable *t, int64_t mailbox_id)
{
	size_t n = 0;

	for (Lease *l = lease_first_of_mailbox(t, mailbox_id); l;
	     l = l->group_next) {
		assert_int_equal(l->mailbox_id, mailbox_id);
		n++;
	}
	return n;
}

/* Each mailbox's group lists exactly its leases, through adds, removes
 * and moves between holders, and a group goes with its last lease. */
static void
test_groups_follow_leases(void **state)
{
	LeaseTable t;
	LeaseList a = {0}, b = {0};
	Lease *l;

	(void)state;
	lease_table_init(&t);
	assert_null(lease_first_of_mailbox(&t, 1));
	/* Ids 1..3000 over mailboxes 1, 2 and 3, two holders. */
	for (uint64_t id = 1; id <= 3000; id++)
		assert_int_equal(lease_add(&t, id % 2 ? &a : &b, id,
					   (int64_t)(id % 3) + 1, NULL,
					   (int64_t)id, NULL),
				 0);
	assert_int_equal(lease_add(&t, &a, 7, 1, NULL, 0, NULL), -EEXIST);
	assert_int_equal(t.n_groups, 3);
	assert_int_equal(group_count(&t, 1), 1000);
	assert_int_equal(group_count(&t, 2), 1000);
	assert_int_equal(group_count(&t, 3), 1000);
	assert_null(lease_first_of_mailbox(&t, 4));

	/* A move between holders keeps the group. */
	lease_move(lease_find(&t, 3), &b, NULL);
	assert_int_equal(group_count(&t, 1), 1000);

	/* Voiding mailbox 2, as its deletion does: only its leases go. */
	while ((l = lease_first_of_mailbox(&t, 2)))
		lease_remove(&t, l);
	assert_int_equal(t.count, 2000);
	assert_int_equal(t.n_groups, 2);
	assert_int_equal(a.count + b.count, 2000);
	assert_null(lease_find(&t, 1)); /* 1 % 3 + 1 == 2 */
	assert_non_null(lease_find(&t, 2));
	assert_non_null(lease_find(&t, 3));
	assert_int_equal(group_count(&t, 1), 1000);
	assert_int_equal(group_count(&t, 3), 1000);

	/* Removed by id, one at a time: the group goes with the last. */
	for (uint64_t id = 3; id <= 3000; id += 3)
		lease_remove(&t, lease_find(&t, id));
	assert_null(lease_first_of_mailbox(&t, 1));
	assert_int_equal(t.n_groups, 1);
	assert_int_equal(group_count(&t, 3), 1000);
	/* The heap still gives the earliest deadline: id 2. */
	assert_int_equal(lease_first_deadline(&t)->msg_id, 2);
	lease_table_release(&t);
	assert_int_equal(t.count, 0);
	assert_int_equal(t.n_groups, 0);
}

/* Many mailboxes: the group table grows, and each mailbox still finds
 * its own; a group made again after its last lease went starts empty. */
static void
test_many_groups(void **state)
{
	LeaseTable t;
	LeaseList list = {0};

	(void)state;
	lease_table_init(&t);
	for (uint64_t id = 1; id <= 1000; id++)
		assert_int_equal(
			lease_add(&t, &list, id, (int64_t)id, NULL, 0, NULL),
			0);
	assert_int_equal(t.n_groups, 1000);
	assert_true(t.n_group_buckets >= 1000);
	for (int64_t mb = 1; mb <= 1000; mb++) {
		Lease *l = lease_first_of_mailbox(&t, mb);

		assert_non_null(l);
		assert_int_equal(l->msg_id, (uint64_t)mb);
		assert_null(l->group_next);
	}
	lease_remove(&t, lease_find(&t, 500));
	assert_null(lease_first_of_mailbox(&t, 500));
	assert_int_equal(lease_add(&t, &list, 5000, 500, NULL, 0, NULL), 0);
	assert_int_equal(group_count(&t, 500), 1);
	assert_int_equal(t.n_groups, 1000);
	lease_table_release(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_groups_follow_leases),
		cmocka_unit_test(test_many_groups),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
