pub async fn run(_args: crate::cli::DemoArgs) -> crate::Result<()> { Ok(()) }
