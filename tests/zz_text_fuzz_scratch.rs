use fovea::graph::text::parse;
#[test]
fn fuzz() {
    let mut seed: u64 = 12345;
    let mut next = || { seed = seed.wrapping_add(0x9E3779B97F4A7C15); let mut z = seed; z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9); z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB); z ^ (z >> 31) };
    let alphabet: Vec<char> = "()[]{},:=@?->_\"\\#\n 0123456789.eE+-abcfgiNnxyz/:".chars().collect();
    let words = ["f32[", "i64[", "_", "const ", "zeros", "normal(seed=1, std=1.0)", "[1, 2]", "conv", "{axis=1}", "-inf", "\"", "?", "N", "0", "99999999999999999999", "1e400", "@\"\"", "split", "{num_outputs=3}", "concat", "reshape", "max_pool", "{kernel_shape=[0, 0]}", "{pads=[9, 9, 9, 9]}", "{strides=[0, 0]}", "{group=0}", "-1", "gather", "slice", "transpose", "{perm=[5, 1]}"];
    let mut panics = 0;
    std::panic::set_hook(Box::new(|_| {}));
    for entry in std::fs::read_dir("ir").unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().contains("resnet") || path.file_name().unwrap().to_string_lossy().contains("mobilenet_v2") { continue; }
        let src: Vec<char> = std::fs::read_to_string(&path).unwrap().chars().collect();
        for _ in 0..3000 {
            let mut s = src.clone();
            for _ in 0..(1 + next() % 3) {
                let i = (next() as usize) % (s.len() + 1);
                match next() % 4 {
                    0 => { if i < s.len() { s.remove(i); } }
                    1 => s.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                    2 => { let w = words[(next() as usize) % words.len()]; for (k, c) in w.chars().enumerate() { s.insert(i + k, c); } }
                    _ => { if i < s.len() { s[i] = alphabet[(next() as usize) % alphabet.len()]; } }
                }
            }
            let text: String = s.into_iter().collect();
            let r = std::panic::catch_unwind(|| { if let Ok(g) = parse(&text) { let p = fovea::graph::text::print(&g); let _ = g.verify(); match parse(&p) { Ok(g2) => { let p2 = fovea::graph::text::print(&g2); if p2 != p { eprintln!("NOT STABLE:\n{p}\n{p2}"); panic!() } } Err(e) => { eprintln!("REPARSE FAIL {e}:\n{p}"); panic!() } } } });
            if r.is_err() { panics += 1; if panics < 8 { eprintln!("PANIC on:\n{text}\n-----"); } }
        }
    }
    assert_eq!(panics, 0);
}
