use super::*;

#[test]
fn operands_match_when_each_result_is_used_once_in_any_order() {
    let published = vec![
        (1, Job::from(Pair { x: 20, y: 6 })),
        (2, Job::from(Pair { x: 42, y: 72 })),
    ];
    assert!(operands_match(&published, &[6, 20, 42, 72]).0);
    let (ok, seen) = operands_match(&published, &[6, 20, 42, 73]);
    assert!(!ok);
    assert!(seen.contains("[72]"), "{seen}");
    assert!(!operands_match(&[], &[6, 20]).0);
}

#[test]
fn the_count_wants_one_job_of_the_shape_per_group() {
    let pair = (1, Job::from(Pair { x: 1, y: 2 }));
    let triplet = (2, Job::from(Triplet { x: 1, y: 2, z: 3 }));
    assert!(group_count(&[pair], &[1, 2], PAIR_GROUP, "Pair").0);
    assert!(!group_count(&[pair, pair], &[1, 2], PAIR_GROUP, "Pair").0);
    assert!(!group_count(&[triplet], &[1, 2], PAIR_GROUP, "Pair").0);
    assert!(group_count(&[triplet], &[1, 2, 3], TRIPLET_GROUP, "Triplet").0);
    assert!(!group_count(&[], &[], PAIR_GROUP, "Pair").0);
}
