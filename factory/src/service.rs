//! The tarpc `stubs::Factory` service: the arithmetic, a line printed per operation, and each
//! Multiply result handed to the pipeline.

use lab_console::Console;
use stubs::{Job, JobError, JobReport};
use tarpc::context::Context;

use crate::arithmetic;
use crate::pipeline::{MultiplyResult, PipelineInput};

/// The factory's RPC service, one clone per request.
#[derive(Clone, Debug)]
pub struct FactoryService {
    console: Console,
    pipeline: Option<PipelineInput>,
}

impl FactoryService {
    /// A service that prints on `console` and, with `pipeline`, feeds it every Multiply result.
    pub fn new(console: Console, pipeline: Option<PipelineInput>) -> Self {
        Self { console, pipeline }
    }

    fn print(&self, operator: char, job: Job, result: &Result<i64, JobError>) {
        let operation = arithmetic::describe(operator, job);
        match result {
            Ok(value) => self.console.line(format_args!("{operation} = {value}")),
            Err(error) => self
                .console
                .line(format_args!("{operation} failed: {error}")),
        }
    }
}

impl FactoryService {
    async fn multiply_one(&self, job: Job) -> Result<JobReport, JobError> {
        let result = arithmetic::multiply(job);
        self.print('*', job, &result);
        if let (Ok(value), Some(pipeline)) = (&result, &self.pipeline) {
            let value = *value;
            let result = match job {
                Job::Pair(_) => MultiplyResult::OfPair(value),
                Job::Triplet(_) => MultiplyResult::OfTriplet(value),
            };
            pipeline.send(result).await;
        }
        result.map(|result| JobReport { result })
    }

    fn divide_one(&self, job: Job) -> Result<JobReport, JobError> {
        let result = arithmetic::divide(job);
        self.print('/', job, &result);
        result.map(|result| JobReport { result })
    }
}

impl stubs::Factory for FactoryService {
    async fn multiply(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.multiply_one(job).await
    }

    async fn divide(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.divide_one(job)
    }

    async fn multiply_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            results.push(self.multiply_one(job).await);
        }
        results
    }

    async fn divide_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        jobs.into_iter().map(|job| self.divide_one(job)).collect()
    }
}
