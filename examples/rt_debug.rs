fn main() {
    let hex = std::env::args().nth(1).unwrap();
    let data: Vec<u8> = hex.split(',').map(|s| s.trim().parse().unwrap()).collect();
    println!("{:?}", cairn::squashfs::roundtrip::fuzz_roundtrip(&data));
}
