//! Turbo timestep schedules, the nearest-shift rule, custom-timestep snapping and the Euler / x0 update.
//!
//! Port of `runtimes/py_ort/acestep_ort/host/schedule.py`: three 8-entry tables, `shift` snapped to the nearest of
//! 1/2/3 (ties to the smaller), custom timesteps float32-rounded, trailing zeros dropped, at most 20 kept,
//! each snapped to the nearest valid value (first on ties). The schedule tensor is float32; `dt` is the
//! difference of two float32 values in double, rounded to float32 when it multiplies `vt`.

pub const VALID_SHIFTS: [f64; 3] = [1.0, 2.0, 3.0];
pub const SHIFT_1: [f64; 8] = [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
pub const SHIFT_2: [f64; 8] = [
    1.0,
    0.9333333333333333,
    0.8571428571428571,
    0.7692307692307693,
    0.6666666666666666,
    0.5454545454545454,
    0.4,
    0.2222222222222222,
];
pub const SHIFT_3: [f64; 8] = [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3];
pub const VALID_TIMESTEPS: [f64; 20] = [
    1.0,
    0.9545454545454546,
    0.9333333333333333,
    0.9,
    0.875,
    0.8571428571428571,
    0.8333333333333334,
    0.7692307692307693,
    0.75,
    0.6666666666666666,
    0.6428571428571429,
    0.625,
    0.5454545454545454,
    0.5,
    0.4,
    0.375,
    0.3,
    0.25,
    0.2222222222222222,
    0.125,
];
pub const MAX_CUSTOM_TIMESTEPS: usize = 20;

/// The closed form behind the tables: `t_i = s*u/(1+(s-1)*u)`, `u = 1 - i/steps`.
pub fn shift_formula(shift: f64, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|i| {
            let u = 1.0 - i as f64 / steps as f64;
            shift * u / (1.0 + (shift - 1.0) * u)
        })
        .collect()
}

/// Python's `min(candidates, key=|x - value|)`: the first candidate at the minimum distance.
fn nearest_first(candidates: &[f64], value: f64) -> f64 {
    let mut best = candidates[0];
    let mut best_d = (best - value).abs();
    for &c in &candidates[1..] {
        let d = (c - value).abs();
        if d < best_d {
            best = c;
            best_d = d;
        }
    }
    best
}

/// `min(VALID_SHIFTS, key=|x - shift|)`: 1.5 -> 1.0, 2.5 -> 2.0.
pub fn nearest_shift(shift: f64) -> f64 {
    nearest_first(&VALID_SHIFTS, shift)
}

/// The table for a snapped shift.
pub fn shift_table(shift: f64) -> &'static [f64; 8] {
    let s = nearest_shift(shift);
    if s == 1.0 {
        &SHIFT_1
    } else if s == 2.0 {
        &SHIFT_2
    } else {
        &SHIFT_3
    }
}

/// Custom timesteps as upstream maps them; `None` means "use the shift table".
pub fn snap_custom_timesteps(timesteps: &[f64]) -> Option<Vec<f64>> {
    let mut values: Vec<f64> = timesteps.iter().map(|&t| t as f32 as f64).collect();
    while values.last() == Some(&0.0) {
        values.pop();
    }
    if values.is_empty() {
        return None;
    }
    values.truncate(MAX_CUSTOM_TIMESTEPS);
    Some(values.iter().map(|&t| nearest_first(&VALID_TIMESTEPS, t)).collect())
}

/// The schedule as upstream resolves it (custom timesteps win when they survive snapping).
pub fn resolve_schedule(shift: f64, timesteps: Option<&[f64]>) -> Vec<f64> {
    if let Some(ts) = timesteps {
        if let Some(snapped) = snap_custom_timesteps(ts) {
            return snapped;
        }
    }
    shift_table(shift).to_vec()
}

/// The schedule tensor on CPU: float32.
pub fn schedule_f32(schedule: &[f64]) -> Vec<f32> {
    schedule.iter().map(|&t| t as f32).collect()
}

/// `dt_i = t_i - t_{i+1}` of the float32 schedule values, in double.
pub fn step_dts(schedule: &[f64]) -> Vec<f64> {
    let t32 = schedule_f32(schedule);
    t32.windows(2).map(|w| w[0] as f64 - w[1] as f64).collect()
}

/// `xt - vt * float32(dt)`, element by element in float32 (no FMA, as numpy).
pub fn euler_step(xt: &[f32], vt: &[f32], dt: f64) -> Vec<f32> {
    let d = dt as f32;
    xt.iter().zip(vt).map(|(&x, &v)| x - v * d).collect()
}

/// The final step `get_x0_from_noise`: `xt - vt * t`.
pub fn x0_step(xt: &[f32], vt: &[f32], t: f32) -> Vec<f32> {
    xt.iter().zip(vt).map(|(&x, &v)| x - v * t).collect()
}

/// One turbo ODE update after step `step`: Euler for all but the last step, x0 reconstruction last.
pub fn ode_update(xt: &[f32], vt: &[f32], schedule: &[f64], step: usize) -> Vec<f32> {
    let t32 = schedule_f32(schedule);
    if step + 1 == t32.len() {
        x0_step(xt, vt, t32[step])
    } else {
        euler_step(xt, vt, t32[step] as f64 - t32[step + 1] as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_closed_form() {
        for (shift, table) in [(1.0, SHIFT_1), (2.0, SHIFT_2), (3.0, SHIFT_3)] {
            let formula = shift_formula(shift, 8);
            assert_eq!(formula.len(), table.len()); // zip alone would pass an empty formula
            for (a, b) in formula.iter().zip(table.iter()) {
                assert!((a - b).abs() < 1e-15, "shift {shift}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_table_value_is_a_valid_timestep() {
        for table in [SHIFT_1, SHIFT_2, SHIFT_3] {
            for t in table {
                assert!(VALID_TIMESTEPS.contains(&t));
            }
        }
    }

    #[test]
    fn nearest_shift_ties_to_the_smaller() {
        assert_eq!(nearest_shift(1.5), 1.0);
        assert_eq!(nearest_shift(2.5), 2.0);
        assert_eq!(nearest_shift(2.6), 3.0);
        assert_eq!(nearest_shift(0.1), 1.0);
        assert_eq!(nearest_shift(10.0), 3.0);
    }

    #[test]
    fn custom_timesteps_snap_and_drop_trailing_zeros() {
        assert_eq!(snap_custom_timesteps(&[0.0, 0.0]), None);
        assert_eq!(snap_custom_timesteps(&[0.97, 0.0]), Some(vec![0.9545454545454546]));
        let long: Vec<f64> = (0..30).map(|_| 0.5).collect();
        assert_eq!(snap_custom_timesteps(&long).map(|v| v.len()), Some(20));
        assert_eq!(resolve_schedule(3.0, Some(&[0.0])), SHIFT_3.to_vec());
    }

    #[test]
    fn update_rules() {
        let sched = SHIFT_1.to_vec();
        let xt = [1.0f32, 2.0];
        let vt = [0.5f32, -1.0];
        assert_eq!(ode_update(&xt, &vt, &sched, 0), vec![1.0 - 0.5 * 0.125, 2.0 + 0.125]);
        assert_eq!(ode_update(&xt, &vt, &sched, 7), vec![1.0 - 0.5 * 0.125, 2.0 + 0.125]);
        assert_eq!(step_dts(&sched).len(), 7);
    }
}
