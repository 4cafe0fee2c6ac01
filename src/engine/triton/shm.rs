//! `--triton-shm`: a request's tensors in POSIX shared memory that the Triton server on the same
//! host maps too (its system shared memory extension), so the request carries region names and
//! offsets instead of megabytes. One region per request in flight: the input, then each output.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::MmapMut;

use super::client::{CallError, TritonClient};
use super::proto::{
    InferParameter, SystemSharedMemoryRegisterRequest, SystemSharedMemoryRegisterResponse,
    SystemSharedMemoryUnregisterRequest, SystemSharedMemoryUnregisterResponse,
};

/// Where `shm_open` keeps its objects on Linux.
const SHM_FOLDER: &str = "/dev/shm";

/// The regions of one model, registered with its server.
pub struct Regions {
    client: TritonClient,
    prefix: String,
    slots: Vec<Option<Slot>>,
}

struct Slot {
    /// The name the server knows the region by.
    name: String,
    file: PathBuf,
    map: MmapMut,
    /// (offset, length) of each output.
    outputs: Vec<(usize, usize)>,
}

/// The parameters that point a request's tensors into a region.
pub struct Placed {
    pub input: HashMap<String, InferParameter>,
    pub outputs: Vec<HashMap<String, InferParameter>>,
}

impl Regions {
    pub fn new(client: &TritonClient, model: &str) -> Self {
        static MODELS: AtomicUsize = AtomicUsize::new(0);
        let safe: String = model
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Regions {
            client: client.clone(),
            prefix: format!(
                "sapiens_{}_{}_{safe}",
                std::process::id(),
                MODELS.fetch_add(1, Ordering::Relaxed)
            ),
            slots: Vec::new(),
        }
    }

    /// Request `slot`'s region (made or grown, and registered, as needed) with room for an
    /// input of `input_len` bytes and outputs of `output_sizes` bytes: the parameters that point
    /// the request there, and the input's bytes for the caller to write.
    pub fn place(
        &mut self,
        slot: usize,
        input_len: usize,
        output_sizes: &[usize],
    ) -> Result<(Placed, &mut [u8]), CallError> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        let needed = input_len + output_sizes.iter().sum::<usize>();
        let fits = self.slots[slot]
            .as_ref()
            .is_some_and(|s| s.map.len() >= needed);
        if !fits {
            if let Some(old) = self.slots[slot].take() {
                unregister(&self.client, &old);
            }
            self.slots[slot] = Some(self.create(slot, needed)?);
        }
        let region = self.slots[slot].as_mut().expect("made above");
        let mut offset = input_len;
        region.outputs = output_sizes
            .iter()
            .map(|&len| {
                let at = (offset, len);
                offset += len;
                at
            })
            .collect();
        let parameters = |offset: usize, len: usize| {
            HashMap::from([
                (
                    "shared_memory_region".to_owned(),
                    InferParameter::text(&region.name),
                ),
                (
                    "shared_memory_offset".to_owned(),
                    InferParameter::int(offset as i64),
                ),
                (
                    "shared_memory_byte_size".to_owned(),
                    InferParameter::int(len as i64),
                ),
            ])
        };
        let placed = Placed {
            input: parameters(0, input_len),
            outputs: region
                .outputs
                .iter()
                .map(|&(offset, len)| parameters(offset, len))
                .collect(),
        };
        Ok((placed, &mut region.map[..input_len]))
    }

    /// Lets go of every region, unregistering what the server may still hold: a server that
    /// went away comes back without them, and they are made and registered again on use.
    pub fn forget(&mut self) {
        for slot in self.slots.iter_mut() {
            if let Some(region) = slot.take() {
                unregister(&self.client, &region);
            }
        }
    }

    /// The first `len` bytes of output `index` of request `slot`, as the server wrote them.
    pub fn output(&self, slot: usize, index: usize, len: usize) -> &[u8] {
        let Some(region) = self.slots.get(slot).and_then(Option::as_ref) else {
            return &[];
        };
        let (offset, room) = region.outputs[index];
        &region.map[offset..offset + len.min(room)]
    }

    fn create(&self, slot: usize, size: usize) -> Result<Slot, CallError> {
        let name = format!("{}_{slot}", self.prefix);
        let file = PathBuf::from(SHM_FOLDER).join(&name);
        let error = |e: std::io::Error| {
            CallError::Refused(format!("shared memory {}: {e}", file.display()))
        };
        let handle = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&file)
            .map_err(error)?;
        handle.set_len(size as u64).map_err(error)?;
        // SAFETY: the file is this process's own, sized above; only the server maps it too, and
        // it writes the outputs' ranges only while a request that names them is in flight.
        let map = unsafe { MmapMut::map_mut(&handle) }.map_err(error)?;
        let region = Slot {
            name,
            file,
            map,
            outputs: Vec::new(),
        };
        let registered = self.register(&region, size).or_else(|first| match first {
            // Still registered from before a failure the server did not see: once more, fresh.
            CallError::Refused(_) => {
                unregister_on_server(&self.client, &region.name);
                self.register(&region, size)
            }
            transient => Err(transient),
        });
        match registered {
            Ok(()) => Ok(region),
            Err(error) => {
                let _ = std::fs::remove_file(&region.file);
                Err(match error {
                    CallError::Refused(message) => CallError::Refused(format!(
                        "the Triton server at {} cannot map shared memory (--triton-shm needs the server on this host, sharing /dev/shm): {message}",
                        self.client.address()
                    )),
                    transient => transient,
                })
            }
        }
    }

    fn register(&self, region: &Slot, size: usize) -> Result<(), CallError> {
        let request = SystemSharedMemoryRegisterRequest {
            name: region.name.clone(),
            key: format!("/{}", region.name),
            offset: 0,
            byte_size: size as u64,
        };
        self.client
            .call::<_, SystemSharedMemoryRegisterResponse>("SystemSharedMemoryRegister", request)
            .map(drop)
    }
}

/// Unregisters a region (best effort: a server that went away has forgotten it) and removes
/// its file.
fn unregister(client: &TritonClient, slot: &Slot) {
    unregister_on_server(client, &slot.name);
    let _ = std::fs::remove_file(&slot.file);
}

fn unregister_on_server(client: &TritonClient, name: &str) {
    let request = SystemSharedMemoryUnregisterRequest {
        name: name.to_owned(),
    };
    let _ = client
        .call::<_, SystemSharedMemoryUnregisterResponse>("SystemSharedMemoryUnregister", request);
}

impl Drop for Regions {
    fn drop(&mut self) {
        for slot in self.slots.iter().flatten() {
            unregister(&self.client, slot);
        }
    }
}
