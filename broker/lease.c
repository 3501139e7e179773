/*
 * lease.c - hash table of leases by message id, with per-holder lists.
 *
 * Chained buckets, grown at load factor 1: acks look leases up by id at
 * every request, so lookups must not degrade with a large window. A
 * binary min-heap by deadline lets one timer serve every lease: the broker
 * arms it for lease_first_deadline() instead of scanning. A second chained
 * table holds one group per mailbox with leases, listing them: deleting a
 * mailbox (every temporary reply mailbox of a CALL) voids its own leases
 * instead of walking everyone's, which let any client stall the broker
 * for as long as the walk of a million leases takes, again and again.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "broker/lease.h"

struct LeaseGroup {
	int64_t mailbox_id;
	Lease *head;
	LeaseGroup *next; /* in its bucket */
};

/* Ids are sequential; mix them so neighbours spread out over n (a power
 * of two) buckets. */
static size_t
id_bucket(uint64_t id, size_t n)
{
	id *= UINT64_C(0x9E3779B97F4A7C15);
	return (size_t)(id >> 32) & (n - 1);
}

static size_t
lease_bucket(const LeaseTable *t, uint64_t id)
{
	return id_bucket(id, t->n_buckets);
}

static size_t
group_bucket(const LeaseTable *t, int64_t mailbox_id)
{
	return id_bucket((uint64_t)mailbox_id, t->n_group_buckets);
}

void
lease_table_init(LeaseTable *t)
{
	t->buckets = NULL;
	t->n_buckets = 0;
	t->count = 0;
	t->heap = NULL;
	t->heap_cap = 0;
	t->groups = NULL;
	t->n_group_buckets = 0;
	t->n_groups = 0;
}

static void
heap_set(LeaseTable *t, size_t i, Lease *l)
{
	t->heap[i] = l;
	l->heap_index = i;
}

static void
heap_up(LeaseTable *t, size_t i)
{
	Lease *l = t->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (t->heap[parent]->deadline_ns <= l->deadline_ns)
			break;
		heap_set(t, i, t->heap[parent]);
		i = parent;
	}
	heap_set(t, i, l);
}

static void
heap_down(LeaseTable *t, size_t i, size_t n)
{
	Lease *l = t->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n &&
		    t->heap[c + 1]->deadline_ns < t->heap[c]->deadline_ns)
			c++;
		if (l->deadline_ns <= t->heap[c]->deadline_ns)
			break;
		heap_set(t, i, t->heap[c]);
		i = c;
	}
	heap_set(t, i, l);
}

Lease *
lease_first_deadline(const LeaseTable *t)
{
	return t->count ? t->heap[0] : NULL;
}

void
lease_table_release(LeaseTable *t)
{
	for (size_t i = 0; i < t->n_buckets; i++) {
		Lease *l = t->buckets[i];
		while (l) {
			Lease *next = l->hash_next;
			free(l);
			l = next;
		}
	}
	for (size_t i = 0; i < t->n_group_buckets; i++) {
		LeaseGroup *g = t->groups[i];
		while (g) {
			LeaseGroup *next = g->next;
			free(g);
			g = next;
		}
	}
	free(t->buckets);
	free(t->heap);
	free(t->groups);
	lease_table_init(t);
}

static int
lease_table_grow(LeaseTable *t)
{
	size_t n = t->n_buckets ? t->n_buckets * 2 : 256;
	Lease **b = calloc(n, sizeof(*b));
	LeaseTable nt = {.buckets = b, .n_buckets = n};

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_buckets; i++) {
		Lease *l = t->buckets[i];
		while (l) {
			Lease *next = l->hash_next;
			size_t k = lease_bucket(&nt, l->msg_id);
			l->hash_next = b[k];
			b[k] = l;
			l = next;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->n_buckets = n;
	return 0;
}

static int
group_table_grow(LeaseTable *t)
{
	size_t n = t->n_group_buckets ? t->n_group_buckets * 2 : 64;
	LeaseGroup **b = calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_group_buckets; i++) {
		LeaseGroup *g = t->groups[i];
		while (g) {
			LeaseGroup *next = g->next;
			size_t k = id_bucket((uint64_t)g->mailbox_id, n);
			g->next = b[k];
			b[k] = g;
			g = next;
		}
	}
	free(t->groups);
	t->groups = b;
	t->n_group_buckets = n;
	return 0;
}

static LeaseGroup *
group_find(const LeaseTable *t, int64_t mailbox_id)
{
	if (!t->n_group_buckets)
		return NULL;
	for (LeaseGroup *g = t->groups[group_bucket(t, mailbox_id)]; g;
	     g = g->next)
		if (g->mailbox_id == mailbox_id)
			return g;
	return NULL;
}

/* The group of mailbox_id, made if it has none: NULL if out of memory. */
static LeaseGroup *
group_get(LeaseTable *t, int64_t mailbox_id)
{
	LeaseGroup *g = group_find(t, mailbox_id);
	size_t k;

	if (g)
		return g;
	if (t->n_groups >= t->n_group_buckets && group_table_grow(t) < 0)
		return NULL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->mailbox_id = mailbox_id;
	k = group_bucket(t, mailbox_id);
	g->next = t->groups[k];
	t->groups[k] = g;
	t->n_groups++;
	return g;
}

static void
group_link(LeaseGroup *g, Lease *l)
{
	l->group = g;
	l->group_prev = NULL;
	l->group_next = g->head;
	if (g->head)
		g->head->group_prev = l;
	g->head = l;
}

/* A group lives while it has leases. */
static void
group_free_if_empty(LeaseTable *t, LeaseGroup *g)
{
	LeaseGroup **pp;

	if (g->head)
		return;
	pp = &t->groups[group_bucket(t, g->mailbox_id)];
	while (*pp != g)
		pp = &(*pp)->next;
	*pp = g->next;
	t->n_groups--;
	free(g);
}

static void
group_unlink(LeaseTable *t, Lease *l)
{
	LeaseGroup *g = l->group;

	if (l->group_prev)
		l->group_prev->group_next = l->group_next;
	else
		g->head = l->group_next;
	if (l->group_next)
		l->group_next->group_prev = l->group_prev;
	l->group = NULL;
	group_free_if_empty(t, g);
}

Lease *
lease_first_of_mailbox(const LeaseTable *t, int64_t mailbox_id)
{
	LeaseGroup *g = group_find(t, mailbox_id);

	return g ? g->head : NULL;
}

Lease *
lease_find(const LeaseTable *t, uint64_t msg_id)
{
	if (!t->n_buckets)
		return NULL;
	for (Lease *l = t->buckets[lease_bucket(t, msg_id)]; l;
	     l = l->hash_next)
		if (l->msg_id == msg_id)
			return l;
	return NULL;
}

static void
list_append(LeaseList *list, Lease *l)
{
	l->list = list;
	l->next = NULL;
	l->prev = list->tail;
	if (list->tail)
		list->tail->next = l;
	else
		list->head = l;
	list->tail = l;
	list->count++;
}

static void
list_unlink(Lease *l)
{
	LeaseList *list = l->list;

	if (l->prev)
		l->prev->next = l->next;
	else
		list->head = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		list->tail = l->prev;
	list->count--;
	l->list = NULL;
}

int
lease_add(LeaseTable *t, LeaseList *list, uint64_t msg_id, int64_t mailbox_id,
	  void *holder, int64_t deadline_ns, Lease **out)
{
	LeaseGroup *g;
	Lease *l;
	size_t k;

	if (lease_find(t, msg_id))
		return -EEXIST;
	if (t->count >= t->n_buckets && lease_table_grow(t) < 0)
		return -ENOMEM;
	if (t->count >= t->heap_cap) {
		size_t cap = t->heap_cap ? 2 * t->heap_cap : 256;
		Lease **h = realloc(t->heap, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		t->heap = h;
		t->heap_cap = cap;
	}
	g = group_get(t, mailbox_id);
	if (!g)
		return -ENOMEM;
	l = calloc(1, sizeof(*l));
	if (!l) {
		group_free_if_empty(t, g);
		return -ENOMEM;
	}
	l->msg_id = msg_id;
	l->mailbox_id = mailbox_id;
	l->msg_len = LEASE_LEN_UNKNOWN;
	l->holder = holder;
	l->deadline_ns = deadline_ns;
	k = lease_bucket(t, msg_id);
	l->hash_next = t->buckets[k];
	t->buckets[k] = l;
	t->heap[t->count] = l;
	l->heap_index = t->count;
	t->count++;
	heap_up(t, l->heap_index);
	list_append(list, l);
	group_link(g, l);
	if (out)
		*out = l;
	return 0;
}

void
lease_move(Lease *l, LeaseList *list, void *holder)
{
	list_unlink(l);
	list_append(list, l);
	l->holder = holder;
}

void
lease_set_deadline(LeaseTable *t, Lease *l, int64_t deadline_ns)
{
	l->deadline_ns = deadline_ns;
	heap_down(t, l->heap_index, t->count);
	heap_up(t, l->heap_index);
}

void
lease_remove(LeaseTable *t, Lease *l)
{
	Lease **pp = &t->buckets[lease_bucket(t, l->msg_id)];

	while (*pp && *pp != l)
		pp = &(*pp)->hash_next;
	if (*pp) {
		size_t i = l->heap_index, last = t->count - 1;
		*pp = l->hash_next;
		t->count--;
		if (i != last) {
			heap_set(t, i, t->heap[last]);
			heap_down(t, i, t->count);
			heap_up(t, t->heap[i]->heap_index);
		}
	}
	list_unlink(l);
	group_unlink(t, l);
	free(l);
}
