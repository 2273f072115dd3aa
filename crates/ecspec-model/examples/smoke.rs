use ecspec_model::*;
use std::time::Instant;
fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap();
    let t0 = Instant::now();
    let m = LoadedModel::load(path.as_ref())?;
    println!(
        "loaded {} in {:?}; base hash {}",
        m.name,
        t0.elapsed(),
        m.base_hash
    );
    let chat = m.chat_template.clone().unwrap();
    let prompt = chat.render(
        &[ChatMessage {
            role: Role::User,
            content: "Write a Python function that reverses a string.".into(),
        }],
        true,
    );
    let ids = m.tokenizer.encode(&prompt, true)?;
    println!(
        "prompt {} tokens: {:?}",
        ids.len(),
        &ids[..ids.len().min(20)]
    );
    let mut s = Session::new(m.transformer.clone());
    let t = Instant::now();
    let l = s.forward(&ids, LogitsFor::Last)?;
    println!(
        "prefill {:.1} tok/s",
        ids.len() as f64 / t.elapsed().as_secs_f64()
    );
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
            .0 as u32
    };
    let mut out = vec![argmax(l.last())];
    let t = Instant::now();
    for _ in 0..63 {
        let l = s.forward(&[*out.last().unwrap()], LogitsFor::Last)?;
        out.push(argmax(l.last()));
    }
    println!("decode {:.1} tok/s", 63.0 / t.elapsed().as_secs_f64());
    println!("{:?}\n{}", out, m.tokenizer.decode(&out));
    // block forward vs token by token
    let mut s2 = Session::new(m.transformer.clone());
    let mut all = ids.clone();
    all.extend_from_slice(&out[..out.len() - 1]);
    s2.forward(&ids, LogitsFor::Last)?;
    let t = Instant::now();
    let lb = s2.forward(&out[..out.len() - 1], LogitsFor::All)?;
    println!("block of {} verify {:?}", out.len() - 1, t.elapsed());
    let block_greedy: Vec<u32> = (0..lb.rows()).map(|i| argmax(lb.row(i))).collect();
    println!("block greedy equal: {}", block_greedy == out[1..]);
    // exact logits equality for a row
    let mut s3 = Session::new(m.transformer.clone());
    s3.forward(&ids, LogitsFor::Last)?;
    let l1 = s3.forward(&out[..1], LogitsFor::All)?;
    println!("row0 bit-equal: {}", l1.row(0) == lb.row(0));
    let mut s4 = Session::new(m.transformer.clone());
    let lp = s4.forward(&ids, LogitsFor::All)?;
    let mut s5 = Session::new(m.transformer.clone());
    s5.forward(&ids[..ids.len() - 1], LogitsFor::All)?;
    let lq = s5.forward(&ids[ids.len() - 1..], LogitsFor::All)?;
    println!(
        "prefill last row bit-equal to single-step: {}",
        lp.last() == lq.row(0)
    );
    Ok(())
}
