//! The hot path: joins plays to the catalogue, sums exact integer scores and
//! orders each report by score descending, then id ascending (docs/design.md, "Scores and ranks").
//!
//! Built for one job at 100M-track scale: ids are mapped to dense positions
//! (a direct table when ids are compact, else a sorted array with a bucket
//! directory — never a general hash map), positions are assigned in id order
//! so that a stable LSD radix sort on the score alone gives the id-ascending
//! tie-break for free, and every array is a contiguous vector indexed by
//! position. Nothing here does I/O.

use std::sync::Mutex;

/// Maps ids to their positions in a sorted array of unique ids.
#[derive(Debug)]
enum IdLookup {
    /// `slots[id - min]` is the position, or `EMPTY`.
    Dense { min: i64, slots: Vec<u32> },
    /// Positions of ids whose `(id - min) >> shift` is `b` are
    /// `starts[b]..starts[b + 1]` in the sorted id array.
    Bucketed { min: i64, shift: u32, starts: Vec<u32> },
}

const EMPTY: u32 = u32::MAX;

/// A sorted set of unique ids with a fast id → position lookup.
#[derive(Debug)]
pub struct IdIndex {
    ids: Vec<i64>,
    lookup: IdLookup,
}

/// Two rows carry the same id where ids must be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateId {
    pub id: i64,
    pub first_row: usize,
    pub second_row: usize,
}

/// A direct table is used when it costs at most this many slots per id.
const DENSE_SLOTS_PER_ID: u64 = 2;

impl IdIndex {
    /// Builds the index of the distinct values. With `unique`, a repeated
    /// value is an error naming both rows.
    pub fn build(values: &[i64], unique: bool) -> Result<Self, DuplicateId> {
        Self::build_from_pieces(&[values], unique)
    }

    /// [`IdIndex::build`] over a column in pieces (rows numbered across
    /// them): the catalogue stays in the row groups it was decoded in, since
    /// joining them would touch as much fresh memory again.
    pub fn build_from_pieces(pieces: &[&[i64]], unique: bool) -> Result<Self, DuplicateId> {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        assert!(len < EMPTY as usize, "more than 4 billion ids");
        let bounds = pieces
            .iter()
            .filter_map(|p| p.iter().min().zip(p.iter().max()))
            .reduce(|(min, max), (p_min, p_max)| (min.min(p_min), max.max(p_max)));
        let Some((&min, &max)) = bounds else {
            return Ok(Self { ids: Vec::new(), lookup: IdLookup::Dense { min: 0, slots: Vec::new() } });
        };
        let range = (max as i128 - min as i128 + 1) as u128;
        if range <= (len as u128 * DENSE_SLOTS_PER_ID as u128).max(1024) {
            Self::build_dense(pieces, len, min, range as usize, unique)
        } else {
            Self::build_sorted(pieces, len, min, max, unique)
        }
    }

    fn build_dense(pieces: &[&[i64]], len: usize, min: i64, range: usize, unique: bool) -> Result<Self, DuplicateId> {
        // First pass marks each slot with the first row holding it.
        let mut slots = vec![EMPTY; range];
        let mut row = 0;
        for piece in pieces {
            for &id in *piece {
                let slot = &mut slots[id.wrapping_sub(min) as u64 as usize];
                if *slot == EMPTY {
                    *slot = row as u32;
                } else if unique {
                    return Err(DuplicateId { id, first_row: *slot as usize, second_row: row });
                }
                row += 1;
            }
        }
        // Second pass turns rows into positions in id order.
        let mut ids = Vec::with_capacity(len);
        for (offset, slot) in slots.iter_mut().enumerate() {
            if *slot != EMPTY {
                *slot = ids.len() as u32;
                ids.push(min.wrapping_add(offset as i64));
            }
        }
        Ok(Self { ids, lookup: IdLookup::Dense { min, slots } })
    }

    fn build_sorted(pieces: &[&[i64]], len: usize, min: i64, max: i64, unique: bool) -> Result<Self, DuplicateId> {
        let mut rows: Vec<(i64, u32)> = Vec::with_capacity(len);
        rows.extend(pieces.iter().flat_map(|p| p.iter()).enumerate().map(|(row, &id)| (id, row as u32)));
        rows.sort_unstable();
        let mut ids: Vec<i64> = Vec::with_capacity(len);
        for window in rows.windows(2) {
            if unique && window[0].0 == window[1].0 {
                let (first, second) = (window[0].1.min(window[1].1), window[0].1.max(window[1].1));
                return Err(DuplicateId { id: window[0].0, first_row: first as usize, second_row: second as usize });
            }
        }
        ids.extend(rows.iter().map(|&(id, _)| id));
        drop(rows);
        ids.dedup();
        // About one bucket per id keeps each probe to a couple of entries.
        let span = (max as i128 - min as i128) as u128;
        let buckets_wanted = (ids.len() as u128).next_power_of_two().max(1);
        let mut shift = 0u32;
        while (span >> shift) + 1 > buckets_wanted {
            shift += 1;
        }
        let bucket_count = ((span >> shift) + 1) as usize;
        let mut starts = vec![0u32; bucket_count + 1];
        for &id in &ids {
            starts[bucket_of(id, min, shift) + 1] += 1;
        }
        for b in 0..bucket_count {
            starts[b + 1] += starts[b];
        }
        Ok(Self { ids, lookup: IdLookup::Bucketed { min, shift, starts } })
    }

    /// The distinct ids, ascending; position `p` holds `ids()[p]`.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The position of `id`, if present.
    #[inline]
    pub fn position(&self, id: i64) -> Option<u32> {
        match &self.lookup {
            IdLookup::Dense { min, slots } => {
                let offset = id.wrapping_sub(*min) as u64;
                match slots.get(offset as usize) {
                    Some(&p) if p != EMPTY && id >= *min => Some(p),
                    _ => None,
                }
            }
            IdLookup::Bucketed { min, shift, starts } => {
                if id < *min {
                    return None;
                }
                let bucket = bucket_of(id, *min, *shift);
                let (&start, &end) = (starts.get(bucket)?, starts.get(bucket + 1)?);
                let candidates = &self.ids[start as usize..end as usize];
                candidates.binary_search(&id).ok().map(|i| start + i as u32)
            }
        }
    }

    /// Frees the lookup structure, keeping only the sorted ids.
    pub fn into_ids(self) -> Vec<i64> {
        self.ids
    }
}

#[inline]
fn bucket_of(id: i64, min: i64, shift: u32) -> usize {
    ((id as i128 - min as i128) as u128 >> shift) as usize
}

/// The catalogue in track-id order: artist and product of each track as
/// positions into their own sorted id arrays.
#[derive(Debug)]
pub struct Catalogue {
    pub tracks: IdIndex,
    pub artist_of_track: Vec<u32>,
    pub product_of_track: Vec<u32>,
    pub artist_ids: Vec<i64>,
    pub product_ids: Vec<i64>,
}

impl Catalogue {
    /// Builds the catalogue from its three columns (row-aligned, any order),
    /// each in the same pieces (row groups). Duplicate track ids are an
    /// error naming the two rows, numbered across the pieces.
    pub fn build(track_ids: &[&[i64]], artist_ids: &[&[i64]], product_ids: &[&[i64]]) -> Result<Self, DuplicateId> {
        let tracks = IdIndex::build_from_pieces(track_ids, true)?;
        let ((artist_of_track, artist_ids), (product_of_track, product_ids)) = std::thread::scope(|scope| {
            let artists = scope.spawn(|| positions_in_track_order(&tracks, track_ids, artist_ids));
            let products = positions_in_track_order(&tracks, track_ids, product_ids);
            (artists.join().expect("grouping artists panicked"), products)
        });
        Ok(Self { tracks, artist_of_track, product_of_track, artist_ids, product_ids })
    }
}

/// For a grouping column (artist or product): the group position of every
/// track position, and the sorted distinct group ids.
fn positions_in_track_order(tracks: &IdIndex, track_ids: &[&[i64]], group_ids: &[&[i64]]) -> (Vec<u32>, Vec<i64>) {
    let groups = IdIndex::build_from_pieces(group_ids, false).expect("duplicates allowed");
    let group_position = |group: i64| groups.position(group).expect("every group is indexed");
    // Catalogues are usually exported in trackId order; then rows already
    // are positions and the track lookup is skipped.
    let ascending = track_ids.iter().all(|p| p.windows(2).all(|w| w[0] < w[1]))
        && track_ids
            .iter()
            .filter_map(|p| p.first().zip(p.last()))
            .collect::<Vec<_>>()
            .windows(2)
            .all(|w| w[0].1 < w[1].0);
    let mut group_of_track = Vec::with_capacity(tracks.len());
    if ascending {
        for piece in group_ids {
            group_of_track.extend(piece.iter().map(|&group| group_position(group)));
        }
    } else {
        group_of_track.resize(tracks.len(), 0u32);
        for (track_piece, group_piece) in track_ids.iter().zip(group_ids) {
            for (&track, &group) in track_piece.iter().zip(group_piece.iter()) {
                let track_position = tracks.position(track).expect("every catalogue track is indexed");
                group_of_track[track_position as usize] = group_position(group);
            }
        }
    }
    (group_of_track, groups.into_ids())
}

/// Exact track scores being summed from batches of plays by several threads.
#[derive(Debug)]
pub struct ScoreAccumulator {
    scores: Mutex<Vec<u128>>,
}

/// Counts of what a batch contributed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub rows: u64,
    pub unknown_track_rows: u64,
    pub unknown_track_plays: u128,
}

impl BatchCounts {
    pub fn add(&mut self, other: BatchCounts) {
        self.rows += other.rows;
        self.unknown_track_rows += other.unknown_track_rows;
        self.unknown_track_plays += other.unknown_track_plays;
    }
}

impl ScoreAccumulator {
    pub fn new(tracks: usize) -> Self {
        Self { scores: Mutex::new(vec![0u128; tracks]) }
    }

    /// Adds `plays * weight` to each track of a batch (plays must be
    /// non-negative). The id lookup runs outside the lock, so threads decoding
    /// other batches contend only for the short summing loop.
    pub fn add_batch(&self, tracks: &IdIndex, track_ids: &[i64], plays: &[i64], weight: u64) -> BatchCounts {
        thread_local! {
            // Per decoding thread, reused from batch to batch.
            static SCRATCH: std::cell::RefCell<(Vec<u32>, Vec<u64>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with_borrow_mut(|(positions, known_plays)| {
            positions.clear();
            known_plays.clear();
            self.add_batch_with(tracks, track_ids, plays, weight, positions, known_plays)
        })
    }

    fn add_batch_with(
        &self,
        tracks: &IdIndex,
        track_ids: &[i64],
        plays: &[i64],
        weight: u64,
        positions: &mut Vec<u32>,
        known_plays: &mut Vec<u64>,
    ) -> BatchCounts {
        let mut counts = BatchCounts { rows: track_ids.len() as u64, ..BatchCounts::default() };
        for (&id, &count) in track_ids.iter().zip(plays) {
            match tracks.position(id) {
                Some(position) => {
                    positions.push(position);
                    known_plays.push(count as u64);
                }
                None => {
                    counts.unknown_track_rows += 1;
                    counts.unknown_track_plays += count as u128;
                }
            }
        }
        let weight = u128::from(weight);
        let mut scores = self.scores.lock().expect("a scoring thread panicked");
        for (&position, &count) in positions.iter().zip(known_plays.iter()) {
            scores[position as usize] += u128::from(count) * weight;
        }
        counts
    }

    pub fn into_scores(self) -> Vec<u128> {
        self.scores.into_inner().expect("a scoring thread panicked")
    }
}

/// Sums track scores into their groups (artists or products).
pub fn group_scores(track_scores: &[u128], group_of_track: &[u32], groups: usize) -> Vec<u128> {
    let mut scores = vec![0u128; groups];
    for (&score, &group) in track_scores.iter().zip(group_of_track) {
        scores[group as usize] += score;
    }
    scores
}

/// A report's items in rank order: (score, id) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankedItems {
    /// Every score fits 64 bits: `(max - score) << 64 | id as u64`, the
    /// shortfall ascending. Packed into the u128 the score was summed in, so
    /// ranking writes into the scores' own memory instead of touching as
    /// much fresh memory again (first touches are what a busy VM makes
    /// slow), and the radix key is the high half.
    Narrow { max: u64, items: Vec<u128> },
    /// Some score needs more than 64 bits: (score, id), score descending.
    Wide(Vec<(u128, i64)>),
}

impl RankedItems {
    pub fn len(&self) -> usize {
        match self {
            RankedItems::Narrow { items, .. } => items.len(),
            RankedItems::Wide(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The score and id of rank `r` (0-based).
    #[inline]
    pub fn get(&self, rank: usize) -> (u128, i64) {
        match self {
            RankedItems::Narrow { max, items } => {
                let packed = items[rank];
                (u128::from(max - key_of(packed)), packed as u64 as i64)
            }
            RankedItems::Wide(items) => items[rank],
        }
    }

    pub fn max(&self) -> u128 {
        if self.is_empty() {
            0
        } else {
            self.get(0).0
        }
    }
}

/// The radix key of a packed narrow item: its shortfall.
#[inline]
fn key_of(packed: u128) -> u64 {
    (packed >> 64) as u64
}

/// Orders items by score descending, then id ascending. `ids` must be
/// ascending (positions follow id order), so a stable sort on the score
/// alone gives the tie-break. The ids travel with their keys so that
/// writing the report reads one array front to back instead of jumping
/// around by position.
pub fn rank_by_score(ids: Vec<i64>, mut scores: Vec<u128>) -> RankedItems {
    assert_eq!(ids.len(), scores.len());
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must be ascending");
    let max = scores.iter().copied().max().unwrap_or(0);
    if let Ok(max) = u64::try_from(max) {
        for (score, &id) in scores.iter_mut().zip(&ids) {
            *score = (u128::from(max - *score as u64) << 64) | u128::from(id as u64);
        }
        drop(ids);
        RankedItems::Narrow { max, items: radix_sort_by_key(scores) }
    } else {
        let mut items: Vec<(u128, i64)> = scores.into_iter().zip(ids).collect();
        items.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        RankedItems::Wide(items)
    }
}

/// 8-bit digits: 256 write streams per pass stay friendly to the caches and
/// the TLB (11-bit digits measured 4x slower per pass on 10M items).
const DIGIT_BITS: u32 = 8;
const BUCKETS: usize = 1 << DIGIT_BITS;

/// Below this many items one thread sorts alone.
const PARALLEL_SORT_MIN: usize = 1 << 20;

/// Stable radix sort of packed items by [`key_of`]. Large inputs are split
/// at a sampled median key into two halves (one stable two-way pass into
/// the scratch array; every key of the first half is below every key of
/// the second), and each half is sorted on its own thread, the input array
/// serving as its scratch. Splitting by value rather than by top digit
/// matters: scores are Zipf-distributed, so nearly all keys share their top
/// digits. One scratch array is all the fresh memory the sort touches.
fn radix_sort_by_key(mut items: Vec<u128>) -> Vec<u128> {
    let n = items.len();
    let mut scratch = vec![0u128; n];
    if n < PARALLEL_SORT_MIN {
        return if lsd_radix_sort(&mut items, &mut scratch) { scratch } else { items };
    }
    let mut sample: Vec<u64> = items.iter().step_by(n / 4096).map(|&i| key_of(i)).collect();
    let middle = sample.len() / 2;
    let pivot = *sample.select_nth_unstable(middle).1;
    let low_count = items.iter().filter(|&&i| key_of(i) < pivot).count();
    let (mut low, mut high) = (0, low_count);
    for &item in &items {
        if key_of(item) < pivot {
            scratch[low] = item;
            low += 1;
        } else {
            scratch[high] = item;
            high += 1;
        }
    }
    let (low_items, high_items) = scratch.split_at_mut(low_count);
    let (low_spare, high_spare) = items.split_at_mut(low_count);
    std::thread::scope(|scope| {
        scope.spawn(|| sort_in_place(high_items, high_spare));
        sort_in_place(low_items, low_spare);
    });
    scratch
}

/// Sorts `items`, using `spare` (as long) as scratch; the result ends in
/// `items`.
fn sort_in_place(items: &mut [u128], spare: &mut [u128]) {
    if lsd_radix_sort(items, spare) {
        items.copy_from_slice(spare);
    }
}

/// Stable LSD radix sort of packed items by [`key_of`], over the digits of
/// `key - min` only, skipping passes in which every key has the same digit.
/// The passes alternate between `items` and `scratch` (as long); returns
/// whether the result ended in `scratch`.
fn lsd_radix_sort(items: &mut [u128], scratch: &mut [u128]) -> bool {
    let n = items.len();
    let (min_key, max_key) = items.iter().fold((u64::MAX, 0), |(lo, hi), &i| (lo.min(key_of(i)), hi.max(key_of(i))));
    if n < 2 || min_key == max_key {
        return false;
    }
    let digits = (64 - (max_key - min_key).leading_zeros()).div_ceil(DIGIT_BITS) as usize;
    let mut histograms = vec![[0usize; BUCKETS]; digits];
    for &item in items.iter() {
        let key = key_of(item) - min_key;
        for (digit, histogram) in histograms.iter_mut().enumerate() {
            histogram[((key >> (digit as u32 * DIGIT_BITS)) & 0xFF) as usize] += 1;
        }
    }
    let (mut from, mut to) = (items, scratch);
    let mut in_scratch = false;
    for (digit, histogram) in histograms.iter().enumerate() {
        if histogram.iter().any(|&count| count == n) {
            continue;
        }
        let mut offsets = [0usize; BUCKETS];
        let mut total = 0;
        for (offset, &count) in offsets.iter_mut().zip(histogram.iter()) {
            *offset = total;
            total += count;
        }
        let shift = digit as u32 * DIGIT_BITS;
        for &item in from.iter() {
            let bucket = (((key_of(item) - min_key) >> shift) & 0xFF) as usize;
            to[offsets[bucket]] = item;
            offsets[bucket] += 1;
        }
        std::mem::swap(&mut from, &mut to);
        in_scratch = !in_scratch;
    }
    in_scratch
}

/// A deterministic xorshift64 sequence for tests and measurements.
#[cfg(test)]
fn xorshift_sequence(mut state: u64, count: usize) -> impl Iterator<Item = u64> {
    (0..count).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sorted_indexes_agree_on_every_lookup() {
        let compact = [15, 11, 13, 12, 19, 10];
        let sparse = [15, -7_000_000_000_000, 13, i64::MAX, 19, i64::MIN];
        for values in [&compact[..], &sparse[..]] {
            let index = IdIndex::build(values, true).unwrap();
            let mut sorted = values.to_vec();
            sorted.sort();
            assert_eq!(index.ids(), &sorted[..]);
            for (position, &id) in sorted.iter().enumerate() {
                assert_eq!(index.position(id), Some(position as u32), "{id}");
            }
            for absent in [14, 16, 9, 20, 0, i64::MAX - 1, i64::MIN + 1] {
                assert_eq!(index.position(absent), None, "{absent}");
            }
        }
    }

    #[test]
    fn a_repeated_track_id_names_both_rows() {
        for values in [&[5, 6, 7, 6][..], &[5, 6_000_000_000, 7, 6_000_000_000][..]] {
            let err = IdIndex::build(values, true).unwrap_err();
            assert_eq!((err.id, err.first_row, err.second_row), (values[1], 1, 3));
        }
    }

    #[test]
    fn groups_are_deduplicated_and_mapped_in_track_order() {
        let catalogue =
            Catalogue::build(&[&[30, 10][..], &[20]], &[&[7, 5][..], &[7]], &[&[100, 200][..], &[100]]).unwrap();
        assert_eq!(catalogue.tracks.ids(), &[10, 20, 30]);
        assert_eq!(catalogue.artist_ids, vec![5, 7]);
        assert_eq!(catalogue.artist_of_track, vec![0, 1, 1]);
        assert_eq!(catalogue.product_ids, vec![100, 200]);
        assert_eq!(catalogue.product_of_track, vec![1, 0, 0]);
    }

    #[test]
    fn a_catalogue_in_pieces_maps_tracks_like_a_whole_column() {
        // Ascending within each piece but not across them: the track lookup.
        let catalogue =
            Catalogue::build(&[&[20, 30][..], &[10, 40]], &[&[7, 5][..], &[7, 9]], &[&[100, 200][..], &[100, 300]])
                .unwrap();
        assert_eq!(catalogue.tracks.ids(), &[10, 20, 30, 40]);
        assert_eq!((catalogue.artist_ids, catalogue.artist_of_track), (vec![5, 7, 9], vec![1, 1, 0, 2]));
        assert_eq!((catalogue.product_ids, catalogue.product_of_track), (vec![100, 200, 300], vec![0, 0, 1, 2]));
        // Ascending throughout: rows are positions.
        let catalogue =
            Catalogue::build(&[&[10, 20][..], &[30, 40]], &[&[7, 7][..], &[5, 9]], &[&[100, 100][..], &[200, 300]])
                .unwrap();
        assert_eq!((catalogue.artist_ids, catalogue.artist_of_track), (vec![5, 7, 9], vec![1, 1, 0, 2]));
        // A duplicate names rows counted across the pieces.
        for pieces in [&[&[5, 6][..], &[7, 6][..]], &[&[5, 6_000_000_000][..], &[7, 6_000_000_000][..]]] {
            let err = IdIndex::build_from_pieces(pieces, true).unwrap_err();
            assert_eq!((err.id, err.first_row, err.second_row), (pieces[0][1], 1, 3));
        }
    }

    /// Ranks of ids 0..n by `scores`, as (id, score) in rank order.
    fn ranked(scores: &[u128]) -> Vec<(i64, u128)> {
        let ids: Vec<i64> = (0..scores.len() as i64).collect();
        let ranked = rank_by_score(ids, scores.to_vec());
        (0..ranked.len()).map(|r| ranked.get(r)).map(|(score, id)| (id, score)).collect()
    }

    fn comparison_sorted(scores: &[u128]) -> Vec<(i64, u128)> {
        let mut expected: Vec<(i64, u128)> = scores.iter().enumerate().map(|(i, &s)| (i as i64, s)).collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        expected
    }

    #[test]
    fn equal_scores_rank_by_id_ascending() {
        let order: Vec<i64> = ranked(&[5, 9, 5, 0, 9, 5]).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, vec![1, 4, 0, 2, 5, 3]);
    }

    #[test]
    fn radix_order_matches_a_comparison_sort_on_wide_keys() {
        // Every width from a few bits to 64, with many ties.
        let scores: Vec<u128> = xorshift_sequence(0x9E37_79B9_7F4A_7C15, 5000)
            .enumerate()
            .map(|(i, state)| u128::from(state >> (i % 64)) & !0xF)
            .collect();
        assert_eq!(ranked(&scores), comparison_sorted(&scores));
        assert_eq!(ranked(&[u64::MAX as u128, 0, 1]), comparison_sorted(&[u64::MAX as u128, 0, 1]));
    }

    #[test]
    fn the_two_thread_sort_orders_large_inputs_like_a_comparison_sort() {
        let scores: Vec<u128> = xorshift_sequence(0x2545_F491_4F6C_DD1D, PARALLEL_SORT_MIN + 12_345)
            .enumerate()
            .map(|(i, state)| if i % 3 == 0 { 0 } else { u128::from(state >> 20) })
            .collect();
        assert_eq!(ranked(&scores), comparison_sorted(&scores));
    }

    #[test]
    fn scores_beyond_64_bits_are_ordered_exactly() {
        let huge = 1u128 << 100;
        let scores = [huge, huge + 1, 3, huge];
        assert_eq!(ranked(&scores), vec![(1, huge + 1), (0, huge), (3, huge), (2, 3)]);
    }

    #[test]
    fn an_empty_report_ranks_to_nothing() {
        let ranked = rank_by_score(Vec::new(), Vec::new());
        assert!(ranked.is_empty());
        assert_eq!(ranked.max(), 0);
    }

    #[test]
    fn unknown_tracks_are_counted_not_scored() {
        let tracks = IdIndex::build(&[1, 2, 3], true).unwrap();
        let accumulator = ScoreAccumulator::new(3);
        let counts = accumulator.add_batch(&tracks, &[2, 99, 3, 2], &[4, 7, 1, 1], 10);
        assert_eq!(counts, BatchCounts { rows: 4, unknown_track_rows: 1, unknown_track_plays: 7 });
        assert_eq!(accumulator.into_scores(), vec![0, 50, 10]);
    }
}

#[cfg(test)]
mod measure {
    /// `cargo test --release -p popularity-reports --lib ranking::measure -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn time_rank_by_score_on_ten_million() {
        let scores: Vec<u128> = super::xorshift_sequence(0x2545_F491_4F6C_DD1D, 10_000_000)
            .map(|state| {
                // Zipf-like: most scores small, a few huge.
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                ((1.0 / (u + 1e-9)) * 4294967296.0) as u128
            })
            .collect();
        let ids: Vec<i64> = (0..10_000_000).collect();
        let started = std::time::Instant::now();
        let ranked = super::rank_by_score(ids, scores);
        println!("rank_by_score 10M: {:?} ({} items)", started.elapsed(), ranked.len());
    }
}
